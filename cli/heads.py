"""`embed fit-head`, `embed predict`, `embed evaluate`: classifier heads on cached vectors."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import check_output_folders, emit_json, fail, fmt_s, one_line, parse_params, run_guarded, say

FIT_EPILOG = (
    "Examples:\n\n"
    "  embed fit-head logistic --store photos.h5 --out heads/photos-logistic\n\n"
    "  embed fit-head knn --store photos.h5 --shots 5 --json\n\n"
    "  embed fit-head mlp --store photos.h5 --param hidden=512 --plots reports/\n\n"
    "  embed fit-head logistic --store reviews.h5 --class-weight balanced\n\n"
    "  embed fit-head logistic --store photos.h5 --exclude audit.csv --exclude-kinds leak,label_issue\n\n"
    "  embed fit-head logistic --store clip.h5 --init zero-shot --classes \"ant,bee\" --shots 4\n\n"
    "  embed fit-head zero-shot --store clip.h5 --classes \"ant,bee\" --template \"a photo of a {}.\" "
    "--template \"a close-up photo of a {}.\" --out heads/zero-shot\n\n"
    "Heads: logistic, linear-svm, ridge, knn, mlp. Regularisation (C, alpha or k) is chosen on the validation split.\n\n"
    "zero-shot needs no training: on a store built with a CLIP encoder (open_clip:...), each class name is written into "
    "the templates and embedded by the same model's text tower; the head is saved and used like any other. "
    "logistic --init zero-shot pulls the probe toward those weights instead of toward 0 (penalty ||W - W0||^2): "
    "a small C keeps the zero-shot head, a large C gives the plain probe; C is chosen on validation as usual."
)


def _parse_grid(text: str | None) -> list | None:
    if not text:
        return None
    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        fail(f"--grid '{text}' must be comma-separated numbers, e.g. 0.01,0.1,1,10")
    return [int(v) if v.is_integer() else v for v in vals]


def print_fit(r, plots: list[str]) -> None:
    t = r.test
    say(f"{r.head} head on {r.vector_set} ({r.encoder}): {len(r.classes)} classes; "
        f"train {r.counts['train']}, val {r.counts['val']}, test {r.counts['test']}")
    say(f"  splits: {r.split_how}")
    if r.excluded:
        ex = r.excluded
        per = ", ".join(f"{k} {v}" for k, v in ex["per_split"].items())
        say(f"  excluded: {ex['source']}: left out of train/val/test: {per}"
            + (f"; {ex['not_in_a_split']} in no split (unlabelled or unused)" if ex["not_in_a_split"] else "")
            + (f"; {ex['not_in_store']} not in this vector set" if ex["not_in_store"] else ""))
    for n in r.notes:
        say(f"  note: {n}")
    if r.param:
        curve = ", ".join(f"{c['value']:g}: {c['val_accuracy']:.3f}" for c in r.curve)
        ci = r.val_accuracy_ci or [0, 1]
        say(f"  {r.param} chosen {r.selection}: {r.chosen:g} (selection accuracy {r.val_accuracy:.3f}, 95% CI {ci[0]:.3f}-{ci[1]:.3f}; "
            f"optimistic: the value was chosen on it); curve {curve}")
    from embedstore.evaluation.metrics import format_confusion, format_per_class, headline

    if t:
        say(f"  test (never seen by the head): {headline(t)}")
        z = (r.init or {}).get("zero_shot_test")
        if z:
            ci = z["accuracy_ci"]
            say(f"  the zero-shot head alone on the same {z['n']} test items: accuracy {z['accuracy']:.4f} "
                f"(95% CI {ci[0]:.4f}-{ci[1]:.4f}), balanced accuracy {z['balanced_accuracy']:.4f}")
        say(format_per_class(t["per_class"]))
        say("confusion matrix (test):")
        say(format_confusion(t["confusion"]))
    else:
        say("  test: none (--test-fraction 0)")
    say(f"  time: sweep {fmt_s(r.sweep_s)}, refit {fmt_s(r.refit_s)}, wall {fmt_s(r.wall_s)}"
        f"{'' if r.in_memory else ' (streamed from the store)'}")
    if r.out:
        say(f"saved head to {r.out}")
    for p in plots:
        say(f"plot: {p}")


def register(app: typer.Typer) -> None:
    @app.command("fit-head", epilog=FIT_EPILOG)
    def fit_head(
        head: str = typer.Argument(..., metavar="HEAD", help="logistic | linear-svm | ridge | knn | mlp | zero-shot"),
        store: Path = typer.Option(..., "--store", "-s", help="A store built by `embed build` with labels."),
        out: Path = typer.Option(None, "--out", "-o", help="Folder to save the head to (head.json + its arrays file)."),
        vector_set: str = typer.Option(None, "--set", help="Vector set name or encoder id, when the store has several."),
        val_fraction: float = typer.Option(0.15, "--val-fraction", help="Validation share when the store has no val split; 0: choose by cross-validation on train (also used when val has under 30 items per class)."),
        test_fraction: float = typer.Option(0.15, "--test-fraction", help="Test share when the store has no test split; 0: no test split, train on everything (score on a separate store with `embed evaluate`)."),
        seed: int = typer.Option(0, "--seed", min=0, help="Seed for the split and --shots."),
        shots: int = typer.Option(None, "--shots", min=1, help="Train on K seeded items per class (few-shot transfer)."),
        max_memory: str = typer.Option("4GB", "--max-memory", help="Above this, logistic and ridge stream vectors from the store."),
        grid: str = typer.Option(None, "--grid", help="Comma-separated values to sweep instead of the head's default grid."),
        param: list[str] = typer.Option(None, "--param", help="Head parameter NAME=VALUE (repeatable), e.g. hidden=512."),
        device: str = typer.Option("auto", "--device", help="Where the logistic solver runs: auto | cpu | cuda."),
        plots: Path = typer.Option(None, "--plots", help="Write confusion.png and validation_curve.png here."),
        report_dir: Path = typer.Option(None, "--report", help="Write an HTML report (metrics, curve, confusion, embedding map) here."),
        force: bool = typer.Option(False, "--force", help="Replace an existing head at --out."),
        class_weight: str = typer.Option("none", "--class-weight", help="logistic, linear-svm: 'balanced' weights items by n / (K x class count), for imbalanced labels; 'none' (default)."),
        init: str = typer.Option("zero", "--init", help="logistic: zero (plain L2 probe) | zero-shot (pull the probe toward the CLIP zero-shot weights; takes --classes, --template, --weights)."),
        classes: str = typer.Option(None, "--classes", help="zero-shot, --init zero-shot: comma-separated class names, or LABEL=NAME pairs (default: the store's labels)."),
        template: list[str] = typer.Option(None, "--template", help="zero-shot, --init zero-shot: a prompt with {} for the class name (repeatable; averaged). Default: \"a photo of a {}.\""),
        weights: Path = typer.Option(None, "--weights", help="zero-shot, --init zero-shot: the local CLIP weights file the store was built with."),
        exclude: Path = typer.Option(None, "--exclude", help="Leave these items out of train, val and test: the CSV from `embed audit --out` (or any CSV/Parquet with an id column), or a text file with one id per line."),
        exclude_kinds: str = typer.Option(None, "--exclude-kinds", help="With --exclude and an audit CSV: only rows of these kinds, comma-separated: exact_duplicate, near_duplicate, leak, label_issue, outlier (e.g. exact_duplicate,label_issue)."),
        json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    ) -> None:
        """Train a classifier head on a store's cached vectors, choose its regularisation, report test metrics."""
        from embedstore.heads.fit import fit_head as run_fit

        check_output_folders(("--plots", plots, "confusion.png, validation_curve.png"), ("--report", report_dir, "the HTML report"))
        exclusions = None
        if exclude_kinds is not None and exclude is None:
            fail("--exclude-kinds chooses rows of an --exclude file; pass --exclude audit.csv too")
        if exclude is not None:
            from embedstore.sources.exclusions import read_exclusions

            kinds = [k.strip() for k in (exclude_kinds or "").split(",") if k.strip()] or None
            if exclude_kinds is not None and not kinds:
                fail(f"--exclude-kinds '{exclude_kinds}' names no kind; give comma-separated kinds, e.g. exact_duplicate,label_issue")
            exclusions = run_guarded(read_exclusions, exclude, kinds)
        if head == "zero-shot":
            from embedstore.heads.zero_shot import fit_zero_shot

            if init != "zero":
                fail("fit-head zero-shot trains nothing, so --init does not apply; use fit-head logistic --init zero-shot")
            if shots or grid or param or plots or report_dir:
                fail("fit-head zero-shot trains nothing: --shots, --grid, --param, --plots and --report do not apply "
                     "(score the saved head with `embed evaluate HEAD --store S --plots DIR`)")
            report, _ = run_guarded(fit_zero_shot, store, classes=classes, templates=template, out=out,
                                    vector_set=vector_set, weights=str(weights) if weights else None,
                                    val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, device=device,
                                    force=force, exclude=exclusions)
            if json_out:
                emit_json(report.to_dict())
            else:
                print_fit(report, [])
            return
        zero_shot = None
        if init == "zero-shot":
            zero_shot = {"classes": classes, "templates": template or None, "weights": str(weights) if weights else None}
        elif classes is not None or template or weights is not None:
            fail(f"--classes, --template and --weights are options of `fit-head zero-shot` and `--init zero-shot`, not of {head}")
        params = parse_params(param)
        if class_weight not in ("none", "balanced"):
            fail(f"--class-weight must be none or balanced, not {class_weight!r}")
        if class_weight == "balanced":
            if head not in ("logistic", "linear-svm"):
                fail(f"--class-weight balanced is for the logistic and linear-svm heads; {head} has no class weights")
            params["class_weight"] = "balanced"
        report, _ = run_guarded(run_fit, store, head, out=out, vector_set=vector_set, val_fraction=val_fraction,
                                test_fraction=test_fraction, seed=seed, shots=shots, max_memory=max_memory,
                                grid=_parse_grid(grid), params=params, device=device, force=force,
                                progress=not quiet and not json_out, exclude=exclusions, init=init, zero_shot=zero_shot)
        written = []
        if plots is not None:
            from embedstore.reports.plots import head_plots

            written = run_guarded(head_plots, report, plots)
        if report_dir is not None:
            from embedstore.reports import html

            written.append(str(run_guarded(lambda: html.write_report(report_dir, f"embed fit-head {head}: {store.name}", [
                html.head_section(report, report_dir), html.store_map(store, report.vector_set, report_dir)]))))
        if json_out:
            emit_json({**report.to_dict(), "plots": written})
        else:
            print_fit(report, written)

    @app.command(epilog="Examples:\n\n  embed predict heads/photos-logistic new_photos/ --out predictions.csv\n\n"
                        "  embed predict heads/photos-logistic list.csv --store new.h5 --json\n\n"
                        "SOURCE is embedded with exactly the encoder, weights, layer and preprocessing the head was "
                        "trained on; a store as SOURCE is used as it is, if its vectors match.")
    def predict(
        head: Path = typer.Argument(..., metavar="HEAD", help="A head folder saved by `embed fit-head --out`."),
        source: Path = typer.Argument(..., metavar="SOURCE", help="A folder, a CSV/Parquet manifest, or a store (.h5)."),
        out: Path = typer.Option(None, "--out", "-o", help="Write predictions to .csv, .json, .jsonl or .parquet."),
        layout: str = typer.Option("auto", "--layout", help="How a folder is read, as in `embed build`: auto | classes | splits | flat (every file, no labels)."),
        store: Path = typer.Option(None, "--store", "-s", help="Keep the new embeddings in this store (else a temporary one)."),
        weights: Path = typer.Option(None, "--weights", help="The local weights file the head's encoder was built with."),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
        batch_size: int = typer.Option(None, "--batch-size", "-b", min=1, help="Images per forward pass [default: as embed build: 8 on CPU, 64 on a GPU]."),
        workers: int = typer.Option(None, "--workers", "-w", min=0, help="Decode worker processes [default: as embed build]."),
        show: int = typer.Option(10, "--show", min=0, help="Rows to print when there is no --out."),
        json_out: bool = typer.Option(False, "--json", help="Print the report (with every row) as JSON."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    ) -> None:
        """Label new images end to end with a saved head: embed, check provenance, predict."""
        from embedstore.heads.apply import predict as run_predict

        r = run_guarded(run_predict, head, source, out=out, store=store, weights=str(weights) if weights else None,
                        device=device, batch_size=batch_size, workers=workers, progress=not quiet and not json_out,
                        layout=layout)
        bad = next((row for row in r.rows if row["label"] is None or row.get("status") != "ok"), None)
        # nothing could be read (one broken photo, a folder of them): the report, then an error
        nothing = (f"none of the {r.quarantined} item(s) of {source} could be read, so nothing was predicted (e.g. "
                   f"{one_line(bad['id'])}: {bad['reason']})") if r.predicted == 0 and r.quarantined and bad else None
        if json_out:
            emit_json({**r.to_dict(), **({"error": nothing, "exit_code": 1} if nothing else {})})
            if nothing:
                typer.echo(f"error: {nothing}", err=True)
                raise typer.Exit(1)
            return
        say(f"predicted {r.predicted} item(s) with {r.head}; quarantined {r.quarantined}")
        if r.label_counts:
            say("  labels: " + ", ".join(f"{k} {v}" for k, v in sorted(r.label_counts.items())))
        for n in r.notes:
            say(f"  note: {n}")
        if r.accuracy is not None:
            ci = r.accuracy_ci
            say(f"  accuracy against the source's labels: {r.accuracy:.4f} (95% CI {ci[0]:.4f}-{ci[1]:.4f}, on {r.judged} labelled "
                "item(s), none of them used to fit or select the head)")
        if r.out:
            say(f"wrote {r.out}")
        else:
            for row in r.rows[:show]:
                say(f"  {one_line(row['id'])}: {one_line(row['label'] or '-')}" + (f" ({row['prob']:.3f})" if row["prob"] is not None else f" [{row['reason']}]")
                    + (" [seen in training]" if row.get("seen_in_training") else ""))
            if len(r.rows) > show:
                say(f"  ... {len(r.rows) - show} more (use --out FILE)")
        if nothing:
            fail(nothing, 1)

    @app.command(epilog="Example:\n\n  embed evaluate heads/photos-logistic --store holdout.h5 --json")
    def evaluate(
        head: Path = typer.Argument(..., metavar="HEAD", help="A head folder saved by `embed fit-head --out`."),
        store: Path = typer.Option(..., "--store", "-s", help="A labelled store embedded with the head's encoder."),
        split: str = typer.Option(None, "--split", help="Only items of this split (default: every labelled item)."),
        plots: Path = typer.Option(None, "--plots", help="Write confusion.png here."),
        json_out: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
    ) -> None:
        """Metrics of a saved head on a labelled store: accuracy, per-class precision/recall/F1, confusion."""
        from embedstore.evaluation.metrics import format_confusion, format_per_class, headline
        from embedstore.heads.apply import evaluate as run_eval

        check_output_folders(("--plots", plots, "confusion.png"))
        m = run_guarded(run_eval, head, store, split=split)
        if plots is not None:
            from embedstore.reports.plots import plot_confusion

            run_guarded(Path(plots).mkdir, parents=True, exist_ok=True)
            m["plots"] = [str(run_guarded(plot_confusion, m["confusion"], Path(plots) / "confusion.png", f"{head.name} on {store.name}"))]
        if json_out:
            emit_json(m)
            return
        say(f"{m['head']} on {m['store']} ({m['vector_set']})")
        for n in m["notes"]:
            say(f"  note: {n}")
        say(f"  {headline(m)}")
        say(f"  macro precision {m['macro_precision']:.4f}, recall {m['macro_recall']:.4f}")
        if m["unseen_labels"]:
            say(f"  note: labels the head never saw (always wrong): {', '.join(m['unseen_labels'])}")
        say(format_per_class(m["per_class"]))
        say(format_confusion(m["confusion"]))
