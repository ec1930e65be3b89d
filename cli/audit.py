"""`embed audit`: duplicates, leaks across splits, label issues, outliers and class balance, in one pass."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import check_output_folders, emit_json, fmt_s, quiet_option, run_guarded, say

EPILOG = (
    "Examples:\n\n"
    "  embed audit photos.h5\n\n"
    "  embed audit photos.h5 --out issues.csv --report audit/          # a table of findings and an HTML page\n\n"
    "  embed fit-head logistic --store photos.h5 --exclude issues.csv --exclude-kinds leak,near_duplicate\n\n"
    "  embed audit photos.h5 --threshold 0.97 --no-labels --json\n\n"
    "Finds exact duplicates (same content hash) and near-duplicates (cosine thresholds calibrated on the store's "
    "own nearest-neighbour similarities, printed), groups them into clusters with the item to keep (a training "
    "copy first, then the lowest id), copies that cross train/val/test (leaks), suspected label errors "
    "(cleanlab on out-of-fold probabilities of a cross-validated logistic head), the most isolated items and "
    "class balance per split. --out writes one row per finding (id, kind, score, detail); kinds: "
    "exact_duplicate, near_duplicate, leak, label_issue, outlier."
)


def _summary(r) -> None:
    no_splits = list(r.counts) == ["(none)"]
    say(f"audit of {r.store} ({r.vector_set}): {r.items} items; "
        + ("no split column" if no_splits else ", ".join(f"{k} {v}" for k, v in r.counts.items())))
    c = r.calibration
    say(f"  near-duplicate rule: {c['how']}")
    e, nd = r.exact_duplicates, r.near_duplicates
    say(f"  exact duplicates: {e['clusters']} cluster(s), {e['removable']} removable"
        + (f"; {e['label_conflicts']} of them under different labels (the same file answers two ways: fix its label)"
           if e.get("label_conflicts") else ""))
    say(f"  near-duplicates:  {nd['clusters']} cluster(s) of {nd['items']} items, {nd['removable']} removable (one kept each)")
    lk = r.leaks
    if lk["later_items"]:
        say(f"  leak rule: {lk['how']}")
    say(f"  leaks across splits: {lk['pairs']}" + (f" ({', '.join(f'{k} {v}' for k, v in lk['by_split_pair'].items())})"
                                                  if lk["pairs"] else ""))
    li = r.label_issues
    if "skipped" in li:
        say(f"  label issues: not checked ({li['skipped']})")
    else:
        say(f"  label issues: {li['suspects']} suspect(s) of {li['items']} labelled items; out-of-fold accuracy "
            f"{li['out_of_fold_accuracy']:.4f} ({li['folds']}-fold, C={li['C']:g}, cleanlab)"
            + (f"; inconclusive: not clearly above always answering the majority class ({li['majority_share']:.4f})"
               if li.get("inconclusive") else ""))
    o = r.outliers
    say(f"  outliers: the {o['listed']} most isolated item(s) of {r.items} listed (--outliers {o['share']:g}, at least one); {o['score']}")
    for split, counts in r.balance.items():
        vals = sorted(v for lab, v in counts.items() if lab != "(unlabelled)")  # as the imbalance alarm counts them
        blank = counts.get("(unlabelled)", 0)
        if len(vals) > 1:
            say(f"  balance{'' if no_splits else f' in {split}'}: {len(vals)} classes, {vals[0]} to {vals[-1]} items"
                + (f"; {blank} item(s) without a label" if blank else ""))
    for n in r.notes:
        say(f"  note: {n}")
    s = r.seconds
    say(f"  time: neighbours {fmt_s(s['neighbours'])}, labels {fmt_s(s['labels'])}, total {fmt_s(s['total'])} ({s['index_plan']})")
    if r.out:
        say(f"  wrote {r.findings} finding(s) to {r.out}")
    if r.report:
        say(f"  report: {r.report}")
    say(r.verdict)


def register(app: typer.Typer) -> None:
    @app.command(epilog=EPILOG)
    def audit(
        store: Path = typer.Argument(..., metavar="STORE", help="A store built by `embed build`."),
        vector_set: str = typer.Option(None, "--set", help="Vector set name or encoder id, when the store has several."),
        out: Path = typer.Option(None, "--out", help="Write the findings (id, kind, score, detail) to this .csv or .parquet."),
        report: Path = typer.Option(None, "--report", help="Write an HTML report with thumbnails into this folder."),
        k: int = typer.Option(10, "-k", help="Neighbours per item in the k-NN pass."),
        threshold: float = typer.Option(None, "--threshold", help="Near-duplicate cosine, instead of the calibrated rule."),
        outliers: float = typer.Option(0.01, "--outliers", help="Share of items to list as the most isolated."),
        labels: bool = typer.Option(True, "--labels/--no-labels", help="Look for label errors (cross-validated head + cleanlab)."),
        max_memory: str = typer.Option("4GB", "--max-memory", help="Most memory the labelled vectors may take for the label check."),
        seed: int = typer.Option(0, "--seed", help="Seed of the cross-validation folds."),
        exact: bool = typer.Option(False, "--exact", help="Brute-force neighbours even when the set has an approximate index."),
        json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
        quiet: bool = quiet_option(),
    ) -> None:
        """Find what is wrong with a dataset before training on it: duplicates, leaks, label errors, outliers."""
        from embedstore.audit import run_audit, write_audit_report

        check_output_folders(("--report", report, "the HTML report"))
        r = run_guarded(run_audit, store, vector_set=vector_set, k=k, threshold=threshold, outlier_share=outliers,
                        labels=labels, max_memory=max_memory, seed=seed, exact=exact, out=out, progress=not (json_out or quiet))
        if report is not None:
            r.report = str(run_guarded(write_audit_report, r, report))
        if json_out:
            emit_json(r.to_dict(findings=True))
            return
        _summary(r)
