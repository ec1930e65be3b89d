"""`embed finetune`, `embed drift`, `embed compare-encoders`: choosing and improving the encoder."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import emit_json, fail, fmt_s, run_guarded, say

FT_EPILOG = (
    "Examples:\n\n"
    "  embed finetune --store photos.h5 --head heads/photos-logistic --unfreeze 2 --epochs 5 --out runs/ft-001\n\n"
    "  embed finetune --store photos.h5 --out runs/ft-001 --resume\n\n"
    "  embed fit-head logistic --store photos.h5 --set local-dir:runs/ft-001\n\n"
    "  embed finetune --store reviews.h5 --unfreeze 2 --class-weight balanced --out runs/ft-text   # a text store (st:...)\n\n"
    "The result is the encoder local-dir:OUT (weights.safetensors + encoder.json); by default the store is "
    "re-embedded with it (a new vector set beside the old one) and a report compares before and after."
)


def register(app: typer.Typer) -> None:
    @app.command(epilog=FT_EPILOG)
    def finetune(
        ctx: typer.Context,
        store: Path = typer.Option(..., "--store", "-s", help="A labelled store; its items' files are read again."),
        out: Path = typer.Option(..., "--out", "-o", help="Folder for the new encoder, checkpoints and report."),
        head: Path = typer.Option(None, "--head", help="A linear head to start the classifier from (else a logistic probe is fitted)."),
        vector_set: str = typer.Option(None, "--set", help="Vector set name or encoder id, when the store has several."),
        unfreeze: int = typer.Option(2, "--unfreeze", min=0, help="Train the last N blocks (0 = classifier only)."),
        epochs: int = typer.Option(5, "--epochs", min=1, help="Passes over the training items (early stopping may end sooner)."),
        batch_size: int = typer.Option(32, "--batch-size", "-b", min=1, help="Images (or texts) per training step."),
        lr: float = typer.Option(1e-3, "--lr", help="Learning rate of the classifier."),
        backbone_lr_mult: float = typer.Option(0.1, "--backbone-lr-mult", help="Backbone learning rate = lr x this."),
        weight_decay: float = typer.Option(0.05, "--weight-decay", help="AdamW weight decay."),
        patience: int = typer.Option(3, "--patience", min=1, help="Early stop after this many epochs without a better val accuracy."),
        no_augment: bool = typer.Option(False, "--no-augment", help="No random crops, flips or colour jitter."),
        class_weight: str = typer.Option("none", "--class-weight", help="'balanced': weight the loss (and the probe it is compared with) by n / (K x class count), for imbalanced labels."),
        seed: int = typer.Option(0, "--seed", help="Seed of the split, the shuffling and augmentation, and the classifier's initial weights."),
        weights: Path = typer.Option(None, "--weights", help="The local weights file the store was built with."),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda (mixed precision on GPU)."),
        workers: int = typer.Option(None, "--workers", "-w", min=0, help="Decode worker processes [default: as embed build]."),
        resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out run."),
        no_reembed: bool = typer.Option(False, "--no-reembed", help="Do not re-embed the store with the new encoder."),
        json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    ) -> None:
        """Fine-tune the last blocks of the store's encoder on its labelled items; save it as a new encoder version."""
        from embedstore.finetune.loop import Recipe
        from embedstore.finetune.run import finetune as run_ft

        given = dict(unfreeze=unfreeze, epochs=epochs, batch_size=batch_size, lr=lr, backbone_lr_mult=backbone_lr_mult,
                     weight_decay=weight_decay, patience=patience, augment=not no_augment, seed=seed, class_weight=class_weight)
        if resume:  # the run's own recipe, but for the options typed here (which must then agree with it)
            from embedstore.finetune.run import checkpoint_recipe

            saved = checkpoint_recipe(out) or {}
            param = {"augment": "no_augment"}
            typed = {k for k in given if ctx.get_parameter_source(param.get(k, k)).name == "COMMANDLINE"}
            given = {**{k: v for k, v in saved.items() if k in Recipe.__dataclass_fields__}, **{k: given[k] for k in typed}}
        recipe = Recipe(**given)
        r = run_guarded(run_ft, store, out, head=head, vector_set=vector_set, recipe=recipe,
                        weights=str(weights) if weights else None, device=device, workers=workers, resume=resume,
                        overwrite=overwrite, reembed=not no_reembed, progress=not quiet and not json_out,
                        interrupted=f"interrupted: {out} keeps the checkpoint of the last finished epoch; re-run with --resume "
                                    "to continue (if no epoch had finished, nothing was kept: run the command again)")
        if json_out:
            emit_json(r.to_dict())
            return
        from embedstore.finetune.report import models, selection_text, test_text

        say(f"fine-tuned {r.parent} (vector set {r.vector_set}) -> {r.encoder}: {r.trainable_params:,} encoder parameters "
            f"trained (and the classifier), {r.frozen_params:,} frozen; "
            f"{r.counts['train']} train / {r.counts['val']} val / {r.counts['test']} test items")
        for n in r.notes:
            say(f"  note: {n}")
        n_val = r.after["finetuned_classifier"]["selection"]["n"]
        for h in r.history:
            say(f"  epoch {h['epoch']}: train loss {h['train_loss']:.4f}, val loss {h['val_loss']:.4f}, "
                f"val accuracy {h['val_accuracy']:.4f}"
                + (f", balanced {h['val_balanced_accuracy']:.4f}" if "val_balanced_accuracy" in h else "")
                + f" (val split, {n_val} items; {h['seconds']:.1f} s)")
        if r.stopped:
            say(f"  {r.stopped}")
        say(f"  best epoch {r.best_epoch}")
        ms = models(r)
        width = max(len(name) for name, _ in ms) + 1
        n_test = r.before.get("test_n", r.counts["test"])
        say(f"  test split, {n_test} items untouched by the probes' C, the epoch choice and training:")
        for name, d in ms:
            n = f" ({d['test_n']} items)" if d.get("test_n") != n_test else ""
            say(f"    {name + ':':{width}} {test_text(d)}{n}")
        say("  selection scores (optimistic: each chose its setting on these items; compare on the test split above):")
        for name, d in ms:
            say(f"    {name + ':':{width}} {selection_text(d)}")
        if r.new_vector_set:
            say(f"  re-embedded vectors: vector set {r.new_vector_set}")
        for c in r.comparisons:
            say(f"  {c['verdict']}")
        say(f"  report: {r.report}; wall {fmt_s(r.wall_s)}")
        say(f"next: embed drift {store} --from {r.vector_set} --to {r.new_vector_set or r.encoder}")

    @app.command(epilog="Example:\n\n  embed drift photos.h5 --from effnet-lite:lite0 --to local-dir:runs/ft-001")
    def drift(
        store: Path = typer.Argument(..., metavar="STORE", help="A store with two vector sets of the same items."),
        set_from: str = typer.Option(..., "--from", help="Vector set name or encoder id."),
        set_to: str = typer.Option(..., "--to", help="Vector set name or encoder id."),
        k: int = typer.Option(10, "-k", min=1, help="Neighbourhood size for the overlap."),
        sample: int = typer.Option(5000, "--sample", min=10, help="Compare at most this many common items (seeded)."),
        json_out: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
    ) -> None:
        """How far two encoder versions moved the same items: mean cosine shift and kNN overlap@k."""
        from embedstore.detectors.drift import drift as run_drift

        d = run_guarded(run_drift, store, set_from, set_to, sample=sample, k=k)
        if json_out:
            emit_json(d)
            return
        say(f"{d['from']} -> {d['to']} on {d['items']} common items" + (f" (a seeded sample of {d['shared_items']})" if d["shared_items"] > d["items"] else ""))
        if d.get("mean_cosine") is not None:
            say(f"  mean cosine {d['mean_cosine']:.4f} (shift {d['mean_cosine_shift']:.4f}; 5% of items below {d['cosine_p05']:.4f})")
        else:
            say(f"  {d['note']}")
        say(f"  kNN overlap@{d['k']}: {d['knn_overlap']:.4f} (5% of items below {d['knn_overlap_p05']:.2f}; "
            f"unrelated neighbourhoods would share {d['knn_overlap_chance']:.2f} by chance)")
        if d["knn_overlap_chance"] >= 0.5:
            say(f"  note: k = {d['k']} is {d['knn_overlap_chance']:.0%} of the other items, so the overlap says little; "
                "compare more items (--sample) or lower -k")

    @app.command("compare-encoders", epilog="Example:\n\n  embed compare-encoders photos/ --encoders "
                 "effnet-lite:lite0,torchvision:resnet50,open_clip:ViT-B-32/openai --report cmp/")
    def compare_encoders(
        source: Path = typer.Argument(..., metavar="SOURCE", help="A labelled folder or manifest."),
        encoders: str = typer.Option("effnet-lite:lite0", "--encoders", "-e", help="Comma-separated encoder ids."),
        sample: int = typer.Option(500, "--sample", min=10, help="Seeded sample of items to embed with each encoder."),
        seed: int = typer.Option(0, "--seed", help="Seed of the sample, the split and the probes."),
        work: Path = typer.Option(None, "--work", help="Keep the per-encoder stores here (default: a temporary folder)."),
        batch_size: int = typer.Option(None, "--batch-size", "-b", min=1, help="Images per forward pass [default: as embed build: 8 on CPU, 64 on a GPU]."),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
        report_dir: Path = typer.Option(None, "--report", help="Write an HTML report here."),
        json_out: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    ) -> None:
        """Linear-probe and kNN accuracy (95% intervals), throughput and size per encoder on your data, and a recommendation."""
        from embedstore.heads.compare import compare_encoders as run_cmp

        ids = [e.strip() for e in encoders.split(",") if e.strip()]
        c = run_guarded(run_cmp, source, ids, sample=sample, seed=seed, work=work, batch_size=batch_size, device=device,
                        progress=not quiet and not json_out)
        if report_dir is not None:
            from embedstore.reports.html import compare_section, write_report

            c["report"] = str(run_guarded(lambda: write_report(report_dir, "embed compare-encoders", [compare_section(c)])))
        if json_out:
            emit_json(c)
            if c["recommended"] is None:  # nothing compared: a failure, whichever way it is printed
                raise typer.Exit(2)
            return
        say(f"{c['sample']} items of {c['source']} (seed {c['seed']})")
        say(f"  {'encoder':34} {'dim':>5} {'probe':>6} {'95% CI':>13} {'kNN':>6} {'items/s':>8} {'store MB':>8}")
        for r in c["results"]:
            if "error" in r:
                say(f"  {r['encoder']:34} skipped: {r['error']}")
                continue
            lo, hi = r["linear_probe_ci"]
            say(f"  {r['encoder']:34} {r['dim']:5d} {r['linear_probe']:6.3f} {f'{lo:.3f}-{hi:.3f}':>13} {r['knn']:6.3f} "
                f"{(r['encode_items_per_s'] or 0):8.1f} {r['store_mb']:8.2f}")
        if c["recommended"] is None:
            fail(f"no encoder could be run on {c['source']}: {c['results'][0]['error'] if len(c['results']) == 1 else 'see each one above'}")
        say(f"recommended: {c['recommended']}: {c['why']}")
        if c["finetune"]:
            say(f"fine-tuning: {c['finetune']}")
        if c.get("report"):
            say(f"report: {c['report']}")
