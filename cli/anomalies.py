"""`embed anomalies`: fit a detector on a subset of a store, rank the odd items, evaluate on labels."""

from __future__ import annotations

import csv
from pathlib import Path

import typer

from embedstore.atomic import atomic_path, write_json_atomic

from .build import kinds_list
from .common import check_output_folders, emit_json, fail, fmt_s, one_line, parse_params, run_guarded, say

EPILOG = (
    "Examples:\n\n"
    "  embed anomalies --store parts.h5 --method knn --top 20\n\n"
    "  embed anomalies --store parts.h5 --fit-on split=train,label=good --score new_parts/ --method mahalanobis\n\n"
    "  embed anomalies --store digits.h5 --fit-on label=0 --out ranked.csv --save detectors/zeros --json\n\n"
    "  embed anomalies --store parts.h5 --exclude audit.csv --exclude-kinds near_duplicate,exact_duplicate   # fit without the audited items\n\n"
    "Methods: knn (distance to k nearest; --param k=10 --param aggregation=max), lof, mahalanobis (Ledoit-Wolf), "
    "pca (reconstruction error), iforest, ocsvm. Scores: higher = more anomalous; percentile against the fit set.\n\n"
    "--exclude keeps the listed items out of the fit set only: they are still scored (as items the detector did "
    "not see), ranked and marked 'x' (excluded: true in --out and --json), so their own outliers stay visible."
)


def _write_ranked(out: Path, ranked: list) -> None:
    if out.suffix.lower() not in (".csv", ".json"):
        fail(f"--out {out}: use a .csv or .json file name")
    if out.suffix.lower() == ".json":
        write_json_atomic(out, ranked, indent=1)
        return
    with atomic_path(out) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["rank", "id", "uri", "label", "score", "percentile", "flagged", "in_fit_set", "excluded"])
        w.writeheader()
        w.writerows(ranked)


def _histograms(report, out_dir: Path) -> list[str]:
    from embedstore.reports.plots import plot_score_histogram

    out_dir.mkdir(parents=True, exist_ok=True)
    return [str(plot_score_histogram(report.ranked, -report.threshold["offset"], report.method, out_dir / "scores_by_label.png"))]


def register(app: typer.Typer) -> None:
    @app.command(epilog=EPILOG)
    def anomalies(
        store: Path = typer.Option(..., "--store", "-s", help="A store built by `embed build`."),
        method: str = typer.Option("knn", "--method", "-m", help="knn | lof | mahalanobis | pca | iforest | ocsvm"),
        fit_on: str = typer.Option(None, "--fit-on", help="Fit on items matching key=value[,key=value] (label, split, id, uri or a metadata column such as brand=acme); '|' for OR."),
        score: Path = typer.Option(None, "--score", help="Score these new items (folder, manifest or store) instead of the store."),
        layout: str = typer.Option("auto", "--layout", help="How a folder given to --score is read, as in `embed build`: auto | classes | splits | flat (every file, no labels)."),
        vector_set: str = typer.Option(None, "--set", help="Vector set name or encoder id, when the store has several."),
        contamination: float = typer.Option(None, "--contamination", help="Share of new normal items to flag (default 0.05); "
                                            "the threshold is set on fit items scored by models that did not see them."),
        holdout_quantile: float = typer.Option(None, "--holdout-quantile", help="Older spelling of --contamination 1-q (e.g. 0.99 = 0.01)."),
        normal_labels: str = typer.Option(None, "--normal-labels", help="Comma-separated labels that count as normal for AUROC/AUPRC."),
        param: list[str] = typer.Option(None, "--param", help="Detector parameter NAME=VALUE (repeatable), e.g. k=10."),
        top: int = typer.Option(20, "--top", "-n", min=1, help="Rows to print."),
        out: Path = typer.Option(None, "--out", "-o", help="Write the full ranking to .csv or .json."),
        save: Path = typer.Option(None, "--save", help="Save the fitted detector (with its threshold) to this folder."),
        force: bool = typer.Option(False, "--force", help="Replace an existing --save folder."),
        plots: Path = typer.Option(None, "--plots", help="Write a score histogram per label here."),
        report_dir: Path = typer.Option(None, "--report", help="Write an HTML report (histogram, top anomalies as thumbnails, map) here."),
        exclude: Path = typer.Option(None, "--exclude", help="Keep items whose id is in this list out of the fit set (the CSV from `embed audit --out`, any CSV/Parquet with an 'id' column, or one id per line); they are still scored, ranked and marked excluded."),
        exclude_kinds: str = typer.Option(None, "--exclude-kinds", help="With --exclude: only rows of these kinds, comma-separated: exact_duplicate, near_duplicate, leak, label_issue, outlier (e.g. exact_duplicate,near_duplicate); needs a 'kind' column."),
        seed: int = typer.Option(0, "--seed", min=0, help="Seed of the detectors that draw at random (iforest, ocsvm) unless a --param sets random_state."),
        json_out: bool = typer.Option(False, "--json", help="Print the report (top rows) as JSON."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    ) -> None:
        """Rank a store's items by how anomalous they are; AUROC/AUPRC when labels say what is normal."""
        from embedstore.detectors.anomalies import find_anomalies

        if out is not None and out.suffix.lower() not in (".csv", ".json"):
            fail(f"--out {out}: use a .csv or .json file name")
        if out is not None and out.is_dir():
            fail(f"--out {out} is a folder; give a file name ending in .csv or .json")
        check_output_folders(("--plots", plots, "scores_by_label.png"), ("--report", report_dir, "the HTML report"))
        normal = [x.strip() for x in normal_labels.split(",") if x.strip()] if normal_labels else None
        r, _ = run_guarded(find_anomalies, store, method, fit_on=fit_on, score=score, vector_set=vector_set,
                           contamination=contamination, holdout_quantile=holdout_quantile, normal_labels=normal,
                           params=parse_params(param), seed=seed, save=save, force=force,
                           progress=not quiet and not json_out, exclude=exclude, exclude_kinds=kinds_list(exclude_kinds),
                           layout=layout)
        if out is not None:
            run_guarded(_write_ranked, out, r.ranked)
        written = run_guarded(_histograms, r, plots) if plots is not None else []
        if report_dir is not None:
            from embedstore.reports import html

            written.append(str(run_guarded(lambda: html.write_report(report_dir, f"embed anomalies {method}: {store.name}", [
                html.anomaly_section(r, report_dir, top), html.store_map(store, r.vector_set, report_dir)]))))
        if json_out:
            emit_json({**r.to_dict(top=top), "plots": written})
            return
        left_out = f"; {r.excluded_from_fit} left out by --exclude" if r.exclusions else ""
        say(f"{r.method} on {r.vector_set}: fitted on {r.fit_on} ({r.fit_count} items{left_out}), scored {r.scored} ({r.scored_count} items)")
        say(f"  threshold: {r.threshold['description']}; flagged {r.flagged} of {r.scored_count}")
        if r.evaluation:
            e = r.evaluation
            from embedstore.evaluation.intervals import fmt_ci

            fitted = (f"; {e['in_fit_set']} of them fitted on, scored out-of-fold" if e.get("in_fit_set") else
                      "; none of them fitted on")
            say(f"  against labels (normal: {', '.join(e['normal_labels'])}): AUROC {fmt_ci(e['auroc'], e.get('auroc_ci'))}, "
                f"AUPRC {fmt_ci(e['auprc'], e.get('auprc_ci'))} against {e['anomaly_rate']:.4f} for a random ranking "
                f"({e['anomalies']} anomalies of {e['n']} items{fitted})")
        for w in r.warnings:
            say(f"  warning: {w}")
        for n in r.notes:
            say(f"  note: {n}")
        shown = r.ranked[:top]
        width = max([5] + [len(one_line(x["label"] or "-")) for x in shown])
        say(f"  {'rank':>4}  {'score':>9}  {'pctl':>6}  flag  {'label':<{width}}  id  (*: flagged; f: fitted on, scored held out"
            + ("; x: on the --exclude list, not fitted on)" if r.exclusions else ")"))
        for row in shown:
            mark = ("*" if row["flagged"] else " ") + ("f" if row.get("in_fit_set") else " ") + ("x" if row.get("excluded") else " ")
            say(f"  {row['rank']:4d}  {row['score']:9.4g}  {row['percentile']:6.2f}  {mark:<4}  "
                f"{one_line(row['label'] or '-'):<{width}}  {one_line(row['id'])}")
        say(f"  time: fit {fmt_s(r.fit_s)}, score {fmt_s(r.score_s)}")
        for p in [str(out)] if out else []:
            say(f"wrote {p}")
        if r.saved:
            say(f"saved detector to {r.saved}")
        for p in written:
            say(f"plot: {p}")
