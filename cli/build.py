"""`embed build`: embed a folder or manifest into a store."""

from __future__ import annotations

from pathlib import Path

import typer

from embedstore.naming import count

from .common import RESUMABLE, check_output_folders, emit_json, fmt_recall, fmt_s, one_line, run_guarded, say

EPILOG = (
    "Examples:\n\n"
    "  embed build photos/ --store photos.h5                      # offline EfficientNet-Lite0\n\n"
    "  embed build photos/ --store photos.h5 --encoder torchvision:resnet50\n\n"
    "  embed build dataset/ --store d.h5 --layout splits            # dataset/{train,val,test}/<class>/*.jpg\n\n"
    "  embed build list.csv --store s.h5 --encoder open_clip:ViT-B-32/openai --json\n\n"
    "  embed build icons/ --store icons.h5 --resize-mode squash --interpolation bilinear   # small images: nothing cropped\n\n"
    "  embed build /shared/photos --store /shared/photos.h5 --engine ray --address auto   # a Ray cluster\n\n"
    "  embed build holdout/ --store holdout.h5 --like photos.h5   # embedded as photos.h5 was: its heads score it\n\n"
    "  embed build photos/ --store photos.h5 --exclude audit.csv --exclude-kinds near_duplicate,exact_duplicate   # leave audited items out\n\n"
    "Re-running resumes an interrupted build and embeds only new or changed files."
)


def kinds_list(text: str | None) -> list[str] | None:
    """--exclude-kinds "duplicate, corrupt" -> ["duplicate", "corrupt"] (None when not given)."""
    kinds = [k.strip() for k in (text or "").split(",") if k.strip()]
    return kinds or None


def describe_layout(d: dict) -> str:
    """One line: which layout the source was read with, what it found, and from what."""
    if not d or not d.get("layout"):
        return ""
    counts = lambda c, most=8: ", ".join(f"{k} {v}" for k, v in list(c.items())[:most]) + (", ..." if len(c) > most else "")  # noqa: E731
    found = []
    if d["split_counts"]:
        found.append(f"{counts(d['split_counts'])} listed")
    if d["label_counts"]:
        labels = d["label_counts"]
        found.append(f"{count(len(labels), 'class', 'classes')}: {', '.join(list(labels)[:8])}{', ...' if len(labels) > 8 else ''}"
                     if d["split_counts"] else f"{count(len(labels), 'class', 'classes')}: {counts(labels)} listed")
    else:
        found.append("no labels")
    if d.get("metadata_columns"):
        from embedstore.store.select import unfilterable

        usable = [c for c in d["metadata_columns"] if not unfilterable(c)]
        found.append(f"metadata columns {', '.join(map(repr, d['metadata_columns'])) if len(usable) < len(d['metadata_columns']) else ', '.join(usable)}"
                     + (f" (e.g. --where {usable[0]}=...)" if usable else ""))
    return f"{d['layout']} ({'; '.join(found)}) from {d['from']}"


def print_report(r) -> None:
    say(f"built {r.store}: {count(r.encoded, 'new vector')} in set {r.vector_set} ({r.vectors_in_set} in total, {r.dtype})")
    say(f"  source {r.source}: {count(r.items_in_source, 'item')}; unchanged {r.unchanged}; "
        f"labels/splits/metadata updated {r.metadata_updated}; "
        + (f"moved {r.moved} (same id and content at a new path: the path is updated, nothing re-embedded); " if r.moved else "")
        + (f"reused {r.reused} (new ids with the bytes of items whose files are gone, e.g. moved to another folder: "
           "their vectors copied, nothing re-embedded); " if r.reused else "")
        + f"quarantined {r.quarantined}"
        + (f" new, {r.previously_quarantined} still (files unchanged since an earlier build quarantined them; "
           "--retry-quarantined reads them again)"
           if r.previously_quarantined else ""))
    if r.exclusions:
        x = r.exclusions
        parts = [f"the list has {count(x['ids'], 'id')}" + "".join(f", {k} {n}" for k, n in sorted(x["kinds"].items()))]
        if x["ids_not_in_source"]:
            parts.append(f"{x['ids_not_in_source']} of them are not in the source")
        parts.append("items already in the store are kept as they are")
        say(f"  {count(r.excluded, 'item')} left out by --exclude {x['path']} ({'; '.join(parts)})")
    layout_line = describe_layout(r.layout)
    if layout_line:
        say(f"  layout: {layout_line}")
    say(f"  encoder {r.encoder} on {r.device}, precision {r.precision} ({r.precision_reason}), "
        f"batch {r.batch_size}, {r.workers} decode {'slot' if r.engine == 'ray' else 'worker'}(s)"
        f"{f', {r.encoder_threads} encoder thread(s)' if r.encoder_threads else ''}")
    if r.engine == "ray":
        c = r.cluster
        say(f"  ray: {c.get('nodes')} node(s), {c.get('cpus'):g} CPUs, {c.get('gpus'):g} GPUs at {c.get('address')}; "
            f"{c.get('actors')} encoder actor(s) on {c.get('actor_device')}; stage times are summed over workers")
    read_note = "decode in tasks" if r.engine == "ray" else "waiting on decode"
    say(f"  time: read {fmt_s(r.read_s)} ({read_note}), encode {fmt_s(r.encode_s)}, write {fmt_s(r.write_s)}; "
        f"loop {fmt_s(r.loop_s)} at {r.loop_items_per_s:.1f} items/s; wall {fmt_s(r.wall_s)}, {r.items_per_s:.1f} items/s "
        f"overall; {r.shards_written} shard(s) committed")
    say(f"  fixed cost: start-up {fmt_s(r.startup_s)} (the encoder {fmt_s(r.model_load_s)}: its imports, weights load and hash; "
        f"then listing and planning), index and catalog {fmt_s(r.finish_s)}"
        f"{' (its rows appended to the catalog, not rewritten)' if r.catalog_appended else '' if r.catalog_rewritten else ' (checked: already up to date, not rewritten)'}"
        "; paid once per command, not per item")
    if r.catalog_updates:
        if r.catalog_appends == r.catalog_updates:
            how = "each appending the rows since the last"
        elif not r.catalog_appends:
            how = "each rewriting it whole: the build changes items already in the store"
        else:
            how = f"{r.catalog_appends} appending, {r.catalog_updates - r.catalog_appends} rewriting it whole"
        say(f"  catalog: brought up to date {r.catalog_updates} time(s) during the build for readers ({how}), "
            f"{fmt_s(r.catalog_update_s)} on a background thread")
    if r.index:
        say(f"  index: {r.index.get('type')} with {r.index.get('ntotal')} vectors, recall@10 {fmt_recall(r.index.get('recall_at_10'))} "
            f"({r.index.get('recall_note')})")
    for line in attention_lines(r):
        say(f"  {line}")
    for q in r.quarantined_items[:10]:
        say(f"  quarantined {one_line(q['id'])}: {q['reason']}")
    if len(r.quarantined_items) > 10:
        say(f"  ... and {len(r.quarantined_items) - 10} more (see `embed info {r.store}`)")


def attention_lines(r) -> list[str]:
    """What a build says needs a look (slow decode, notes, skipped files, cut texts), as the summary
    prints it and the HTML report shows it."""
    lines = [f"slow decode: {a}" for a in r.advice]  # only when the encoder waited on decode long enough to matter
    lines += [f"note: {n}" for n in r.notes]
    for k, n in r.skipped.items():
        paths = r.skipped_paths.get(k, [])
        fix = r.skipped_fix.get(k)
        lines.append(f"skipped {n} ({k})" + (f": {', '.join(one_line(p) for p in paths)}{', ...' if n > len(paths) else ''}" if paths else "")
                     + (f"; {fix}" if fix else ""))
    if r.truncated:
        lines.append(f"{r.truncated} text(s) were longer than the encoder's maximum length and were cut off")
    return lines


def register(app: typer.Typer) -> None:
    @app.command(epilog=EPILOG)
    def build(
        source: Path = typer.Argument(..., metavar="SOURCE", help="A folder (<class>/..., train|val|test/<class>/..., or flat: see --layout) or a CSV/Parquet manifest with a 'path' column."),
        store: Path = typer.Option(..., "--store", "-s", help="The store file to create or add to (e.g. photos.h5)."),
        encoder: str = typer.Option(None, "--encoder", "-e", help="Encoder id; see `embed encoders` [default: into a store that holds vectors, as its default vector set was made; else effnet-lite:lite0]."),
        weights: Path = typer.Option(None, "--weights", help="Local weights (.safetensors/.pth) for the encoder's architecture."),
        layer: str = typer.Option(None, "--layer", help="Take pooled features from this layer instead of the penultimate one."),
        layout: str = typer.Option("auto", "--layout", help="How to read a folder: auto | classes (<class>/...) | splits (train|val|test/<class>/...) | flat (no labels). auto reads train/val/test folders as splits, never as labels, and refuses a top level that mixes split and class folders."),
        no_labels: bool = typer.Option(False, "--no-labels", help="The folder is flat: no class subfolders (same as --layout flat)."),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
        precision: str = typer.Option("auto", "--precision", help="auto | fp32 | bf16 | fp16 (autocast)."),
        decode: str = typer.Option("workers", "--decode", help="Where images are decoded: workers (CPU decode workers) | device. device leaves JPEGs to the encoder's device: on a GPU they are decoded in batches by nvJPEG and resized there, the workers only read and hash them; on a CPU this process decodes them, taking time from the encoder. Other formats, and JPEGs the device refuses, are decoded on the CPU."),
        accel: str = typer.Option("auto", "--accel", help="Accelerated CPU forward: auto | none | openvino. openvino runs image encoders at exact fp32, ~2-10x eager (needs the openvino package: pip install openvino); auto uses it on CPU when it is installed and the precision is fp32."),
        batch_size: int = typer.Option(None, "--batch-size", "-b", min=1, help="Images per forward pass [default: 8 on CPU (measured fastest there), 64 on a GPU]."),
        workers: int = typer.Option(None, "--workers", "-w", min=0, help="Decode worker processes [default: a quarter of the cores on CPU, at least one, the rest run the encoder, raised up to one a core when the encoder waits on decode (large photos); cores - 1 with a GPU]. A number given here is kept."),
        dtype: str = typer.Option(None, "--dtype", help="Stored vector type: float16 | float32 [default: float16]."),
        normalize: str = typer.Option(None, "--normalize", help="l2 (cosine search) | none [default: l2]."),
        crop_pct: float = typer.Option(None, "--crop-pct", help="Centre-crop fraction in (0, 1] (resize to input / crop-pct, then crop) [default: the encoder's own]."),
        interpolation: str = typer.Option(None, "--interpolation", help="bilinear | bicubic | nearest [default: the encoder's own]."),
        resize_mode: str = typer.Option(None, "--resize-mode", help="shortest (resize the shorter side, centre crop) | squash (straight to the input size, nothing cropped) | longest (fit inside, pad) [default: the encoder's own]."),
        shard_size: int = typer.Option(4096, "--shard-size", min=1, help="Rows per committed shard (the unit of resume)."),
        engine: str = typer.Option("local", "--engine", help="local (this machine) | ray (a Ray cluster; pip install 'embedstore[ray]')."),
        address: str = typer.Option(None, "--address", help="With --engine ray: auto (the running cluster) or ray://host:port [default: a local Ray instance]."),
        actors: int = typer.Option(None, "--actors", help="With --engine ray: encoder actors [default: one per GPU; CPU: one per 8 cores]."),
        like: Path = typer.Option(None, "--like", help="Embed exactly as this store's vectors (its default vector set) or this saved head's were made: the same encoder, weights, layer, preprocessing, dtype and normalisation, so heads fitted on one score the other. Replaces --encoder, --layer, --dtype, --normalize, --crop-pct, --interpolation and --resize-mode."),
        exclude: Path = typer.Option(None, "--exclude", help="Leave out items whose id is in this list: the CSV from `embed audit --out` (or any CSV/Parquet with an 'id' column) or a text file with one id per line. They are not embedded or added; items already in the store stay as they are."),
        exclude_kinds: str = typer.Option(None, "--exclude-kinds", help="With --exclude: only rows of these kinds (comma-separated, e.g. near_duplicate,leak; `embed audit` writes exact_duplicate, near_duplicate, leak, label_issue, outlier); needs a 'kind' column."),
        retry_quarantined: bool = typer.Option(False, "--retry-quarantined", help="Read again the files an earlier build quarantined although they have not changed (e.g. after raising EMBEDSTORE_MAX_IMAGE_PIXELS)."),
        rehash: bool = typer.Option(False, "--rehash", help="Hash every file again instead of trusting an unchanged path, size and modification time (files replaced by others of the same size with their times kept, as tar, zip and cp -p do). Unchanged bytes are still not encoded again."),
        report_dir: Path = typer.Option(None, "--report", help="Write an HTML report (summary, embedding map) to this folder."),
        json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    ) -> None:
        """Embed a folder or manifest into an HDF5 + FAISS store (resumable, incremental)."""
        import time

        started = time.perf_counter()  # the summary's start-up includes the library's imports
        from embedstore.ingest import build as run_build

        check_output_folders(("--report", report_dir, "the HTML report"))  # before the build, not after it
        like_prov = None
        if like is not None:
            from embedstore.errors import BuildError

            from .common import fail
            from embedstore.heads.apply import provenance_like

            chosen = [flag for flag, v in (("--encoder", encoder), ("--layer", layer), ("--dtype", dtype), ("--normalize", normalize),
                                           ("--crop-pct", crop_pct), ("--interpolation", interpolation),
                                           ("--resize-mode", resize_mode)) if v is not None]
            if chosen:
                fail(f"--like {like} embeds exactly as its vectors were made; leave out {', '.join(chosen)}")
            like_prov, _ = run_guarded(provenance_like, like, BuildError)
        report = run_guarded(
            run_build, source, store, like=like_prov, encoder=encoder, weights=str(weights) if weights else None, layer=layer,
            device=device, precision=precision, batch_size=batch_size, workers=workers, dtype=dtype,
            normalize=normalize, labels=not no_labels, layout=layout, progress=not quiet,
            shard_rows=shard_size, engine=engine, address=address, actors=actors,
            crop_pct=crop_pct, interpolation=interpolation, resize_mode=resize_mode,
            exclude=exclude, exclude_kinds=kinds_list(exclude_kinds), started=started, accel=accel, decode=decode,
            retry_quarantined=retry_quarantined, rehash=rehash, interrupted=RESUMABLE,
        )
        page = None
        if report_dir is not None:
            from embedstore.reports import html

            page = run_guarded(lambda: html.write_report(report_dir, f"embed build: {store.name}", [
                html.build_section(report, describe_layout(report.layout), attention_lines(report), store),
                html.store_map(store, report.vector_set, report_dir)]))
        if json_out:
            emit_json({**report.to_dict(), "report": str(page) if page else None})
        else:
            print_report(report)
            if page:
                say(f"report: {page}")
