"""The build loop: read -> encode -> write, each stage timed, and nothing else in the loop."""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ..errors import BuildError, StoreError
from ..progress import progress_bar
from ..sources import open_source
from ..sources.folder import SKIP_FIXES
from ..store import open_store
from ..store.schema import SCHEMA_VERSION, STATUS_OK, STATUS_QUARANTINED
from ..embedding.accel import ACCELS
from ..embedding.pixels import DECODES
from ..embedding.device import default_workers, resolve_device
from ..embedding.service import BUILD_PRECISION, DTYPES, NORMALIZE, EmbeddingService, build_precision_here, vector_problem
from ..memory import release_freed_memory
from .loader import ADAPT_SECONDS, CPU_BATCH_SIZE, GPU_BATCH_SIZE, Feed, cpu_split
from ..settings import env_number
from .notes import add_image_notes, image_note_lines
from .plan import make_plan
from .writer import ShardWriter

log = logging.getLogger(__name__)
DEFAULT_ENCODER = "effnet-lite:lite0"


@dataclass
class BuildReport:
    """What a build did: counts, per-stage time, and every decision a user should know of."""

    store: str
    source: str
    encoder: str
    vector_set: str
    device: str
    precision: str
    precision_reason: str
    dtype: str
    batch_size: int
    workers: int
    encoder_threads: int = 0  # torch threads the encoder ran with (CPU); 0: left as they were
    accel: str = "none"  # the accelerated forward that ran (embedding/accel.py): openvino | none, and why
    accel_reason: str = ""
    items_in_source: int = 0
    encoded: int = 0
    unchanged: int = 0
    metadata_updated: int = 0
    moved: int = 0  # items found at a new path (same id): their paths updated; counted in unchanged or encoded too
    reused: int = 0  # new ids whose bytes a gone item had (a file moved to another folder, or renamed): vector copied
    quarantined: int = 0
    previously_quarantined: int = 0
    skipped: dict = field(default_factory=dict)
    skipped_paths: dict = field(default_factory=dict)  # reason -> the first paths skipped for it (up to 5)
    skipped_fix: dict = field(default_factory=dict)  # reason -> what to do about it, where there is advice (folder.SKIP_FIXES)
    quarantined_items: list = field(default_factory=list)
    catalog_rewritten: bool = True  # False: the catalog was already up to date, or the build's rows were appended to it
    catalog_appended: bool = False  # the build ended by appending its rows to the catalog (store/segments.py)
    catalog_updates: int = 0  # catalog updates during the loop (readers see progress), each on a background thread
    catalog_appends: int = 0  # of those, the ones that appended the new rows (store/segments.py) rather than rewrote all
    catalog_update_s: float = 0.0  # their time, off the encoder's path
    startup_s: float = 0.0  # fixed cost before the first item is read: imports, source listing, model load, weights hash, plan
    model_load_s: float = 0.0  # part of startup_s: building the encoder (its library imports, weights load and hash)
    loop_s: float = 0.0  # the read -> encode -> write loop (per-item cost)
    finish_s: float = 0.0  # fixed cost after the loop: catalog and index (with its recall check)
    read_s: float = 0.0
    encode_s: float = 0.0
    write_s: float = 0.0
    wall_s: float = 0.0
    items_per_s: float = 0.0  # encoded / wall_s: the whole command
    loop_items_per_s: float = 0.0  # encoded / loop_s: the throughput once started, what more items would cost
    decode_wait_share: float = 0.0  # read_s / loop_s: the share of the loop the encoder spent waiting on decode
    first_batch_wait_s: float = 0.0  # part of read_s: waiting for the first batch (workers starting, one batch decoded)
    load_average: float = 0.0  # the machine's 1-minute load average when the loop ended (other work competes)
    advice: list = field(default_factory=list)  # what to change when decoding held the encoder back
    shards_written: int = 0
    vectors_in_set: int = 0
    index: dict = field(default_factory=dict)
    interrupted: bool = False
    truncated: int = 0  # texts longer than the encoder's maximum length (their ends were cut off)
    engine: str = "local"
    cluster: dict = field(default_factory=dict)  # --engine ray: address, nodes, CPUs, GPUs, actors
    layout: dict = field(default_factory=dict)  # how the source was read (Source.describe_layout)
    notes: list = field(default_factory=list)  # decisions the user should know of (e.g. preprocessing for small images)
    # what decoding found in the images embedded (ingest/notes.py): kind -> {"count", "examples": [{"id", "detail"}]};
    # said in `notes` too, one line a kind
    image_notes: dict = field(default_factory=dict)
    excluded: int = 0  # source items left out because their id is on the --exclude list
    exclusions: dict = field(default_factory=dict)  # the --exclude list: path, ids, kinds, ids not in the source
    decode: str = "workers"  # where images were decoded: workers | device (JPEGs on the encoder's device)
    decoded_on_device: int = 0  # --decode device: JPEGs decoded on the encoder's device (the rest by CPU workers)

    def to_dict(self) -> dict:
        return asdict(self)


def library_versions() -> dict:
    import h5py
    import faiss
    import torch

    from .. import __version__

    return {"embedstore": __version__, "torch": torch.__version__, "h5py": h5py.__version__,
            "faiss": faiss.__version__, "python": platform.python_version()}


def _set_attrs(prov: dict, set_name: str) -> dict:
    """Provenance attributes of a vector set (JSON for nested values)."""
    attrs = {k: json.dumps(v, sort_keys=True) if isinstance(v, dict) else v for k, v in prov.items()}
    attrs.update(key=set_name.rsplit("-", 1)[1], created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 library_versions=json.dumps(library_versions()), schema_version=SCHEMA_VERSION)
    return attrs


def outcome(reason: str | None, unchanged: bool, vector, dtype: str) -> tuple[str, str | None]:
    """What becomes of one loaded item: ("quarantined", reason), ("unchanged", None) or
    ("encoded", None). The local loop and Ray's write tasks both decide here."""
    if not reason and not unchanged:
        reason = vector_problem(vector, dtype)
    if reason:
        return "quarantined", reason
    return ("unchanged" if unchanged else "encoded"), None


def _row(task, sha: str, status: str = STATUS_OK, reason: str = "") -> dict:
    it = task.item
    return {"id": it.id, "uri": it.uri, "label": it.label, "split": it.split, "sha256": sha,
            "size": task.size, "mtime_ns": task.mtime_ns, "status": status, "reason": reason, "text": it.text or "",
            "meta": it.meta or ""}


def build(
    source: str | Path,
    store: str | Path,
    encoder: str | None = None,
    weights: str | None = None,
    layer: str | None = None,
    device: str = "auto",
    precision: str = "auto",
    batch_size: int | None = None,
    workers: int | None = None,
    dtype: str | None = None,
    normalize: str | None = None,
    labels: bool = True,
    layout: str = "auto",
    progress: bool = True,
    shard_rows: int = 4096,
    commit_seconds: float = 60.0,
    catalog_seconds: float | None = None,
    engine: str = "local",
    address: str | None = None,
    actors: int | None = None,
    crop_pct: float | None = None,
    interpolation: str | None = None,
    resize_mode: str | None = None,
    like: dict | None = None,
    exclude: str | Path | None = None,
    exclude_kinds: list[str] | None = None,
    started: float | None = None,
    accel: str = "auto",
    decode: str = "workers",
    retry_quarantined: bool = False,
    rehash: bool = False,
) -> BuildReport:
    """Embed every new or changed item of `source` into `store`; resumable and incremental.

    `batch_size` None: 8 for images on CPU (measured; see `loader.CPU_BATCH_SIZE`), else 64. `workers`
    None: on CPU a quarter of the cores (at least one) decode and the rest run the encoder's threads.
    `layout` reads a folder as auto | classes | splits | flat (see `open_source`; `labels=False` is flat).
    `crop_pct`, `interpolation` and `resize_mode` override the encoder's image preprocessing (another
    preprocessing is another vector set). `like` (a vector set's provenance) embeds exactly as that
    set was made, instead of `encoder`, `layer`, `dtype`, `normalize` and the preprocessing.
    `engine="ray"` runs the read, encode and write stages on a Ray cluster (`address`: None for a
    local Ray instance, "auto" for the running cluster, "ray://host:port" for Ray Client).
    `exclude` (an exclusion list, see `sources.exclusions`; `exclude_kinds` keeps only rows of those
    kinds) leaves source items with those ids out: they are neither embedded nor added, and items
    already in the store are left as they are. `started` (a `time.perf_counter()` reading) is when
    the caller began, so the report's start-up includes its imports (the CLI passes it).
    `catalog_seconds`: how often at least the catalog is brought up to date for readers during the
    build (ingest/writer.ShardWriter; default 30, or EMBEDSTORE_CATALOG_SECONDS).
    `decode`: "workers" decode every image in the decode workers; "device" leaves JPEGs to the
    encoder's device (nvJPEG on a GPU, batched; on a CPU this process decodes them) and the workers
    only read and hash them (embedding/pixels.py). `retry_quarantined`: read again the files an
    earlier build quarantined, though they have not changed (ingest/plan.make_plan). `rehash`: hash
    every file again instead of trusting an unchanged path, size and modification time (a file
    swapped for another of the same size with its time kept, as archives and `cp -p` do).

    `encoder` None: a store that holds vectors is embedded into as its default set was made (see
    `store_encoder`), a new store with DEFAULT_ENCODER; `dtype` None is float16, `normalize` None l2."""
    t_start = time.perf_counter() if started is None else started
    given = dict(weights=weights, layer=layer, dtype=dtype, normalize=normalize, crop_pct=crop_pct,
                 interpolation=interpolation, resize_mode=resize_mode)  # embedding options given (store_encoder)
    dtype, normalize = dtype or "float16", normalize or "l2"
    # settings read before anything runs: a malformed value is one line now, not a failure after the encoding
    if catalog_seconds is None:
        catalog_seconds = env_number("EMBEDSTORE_CATALOG_SECONDS", 30.0)
    from ..store.index import exact_max_rows, pq_min_rows
    from ..store.segments import grace

    from ..sources.images import max_pixels

    exact_max_rows(), pq_min_rows(), grace(), max_pixels()
    if dtype not in DTYPES:
        raise BuildError(f"--dtype must be float16 or float32, not '{dtype}'")
    if normalize not in NORMALIZE:
        raise BuildError(f"--normalize must be l2 or none, not '{normalize}'")
    if batch_size is not None and batch_size < 1:
        raise BuildError(f"--batch-size must be at least 1, not {batch_size}")
    if workers is not None and workers < 0:
        raise BuildError(f"--workers must be 0 or more, not {workers}")
    if engine not in ("local", "ray"):
        raise BuildError(f"--engine must be local or ray, not '{engine}'")
    if engine == "local" and (address is not None or actors is not None):
        raise BuildError("--address and --actors apply to --engine ray; add --engine ray or leave them out")
    if engine == "ray" and workers is not None:
        raise BuildError("--workers applies to the local engine; with --engine ray decode tasks are sized to the cluster, leave it out")
    if accel not in ACCELS:
        raise BuildError(f"--accel must be one of {', '.join(ACCELS)}, not '{accel}'")
    if decode not in DECODES:
        raise BuildError(f"--decode must be one of {', '.join(DECODES)}, not '{decode}'")
    if decode == "device" and engine == "ray":
        raise BuildError("--decode device applies to the local engine (Ray decode tasks run on the CPU); leave it out with --engine ray")
    if exclude_kinds and exclude is None:
        raise BuildError("--exclude-kinds chooses rows of an exclusion list; add --exclude FILE or leave it out")
    exclusions = None
    if exclude is not None:  # a bad list fails before the store is opened or any model loads
        from ..sources.exclusions import read_exclusions

        exclusions = read_exclusions(exclude, exclude_kinds)
    src = open_source(source, labels=labels, layout=layout)  # bad sources fail before any model loads
    encoder, like, encoder_note = store_encoder(store, encoder, like, src.kind == "text", **given)
    items_in_source, layout_found = len(src), src.describe_layout()  # as found, before any exclusion
    excluded_info = {}
    if exclusions is not None:
        kept = src.items.where(lambda it: it.id not in exclusions.ids)
        matched = {i for i in src.items.column("id") if i in exclusions.ids}
        excluded_info = {"path": exclusions.path, "ids": len(exclusions), "kinds": dict(exclusions.kinds),
                         "left_out": len(src.items) - len(kept), "ids_not_in_source": len(exclusions.ids - matched),
                         "description": exclusions.describe()}
        src.items = kept
    cluster = None
    if engine == "ray":
        from .ray_engine import connect

        cluster = connect(address)
    threads_before = None
    try:
        if cluster is not None:
            dev, prec, prec_reason = cluster.plan(device, precision, actors)
        else:
            dev, prec, prec_reason = device, precision, None
        texts = src.kind == "text"
        threads = 0  # the encoder's torch threads when this build sets them (a local image build on CPU)
        accelerated, asked_workers = False, workers  # whether those threads were chosen for an accelerated forward
        if cluster is None and not texts and resolve_device(dev).type == "cpu":
            import torch

            # decode workers and encoder threads share the cores (loader.cpu_split). Set before the
            # encoder is built: an accelerated forward compiles for the threads it finds, and one
            # recompiled after a change crashed a later fork (OpenVINO); restored when the build ends.
            from ..embedding.accel import openvino_installed

            # the accelerated forward compiles for the threads set here: guess it before the encoder
            # exists (corrected below, before anything compiles, when the build runs eager after all)
            accelerated = (accel in ("auto", "openvino") and prec in ("auto", "fp32") and openvino_installed()
                           and (like is None or like.get(BUILD_PRECISION) in (None, "fp32")))
            workers, threads = cpu_split(os.cpu_count() or 1, workers, accelerated)
            threads_before = torch.get_num_threads()
            torch.set_num_threads(threads)
        notes: list[str] = [encoder_note] if encoder_note else []
        from ..store.select import unfilterable

        odd = [c for c in (layout_found or {}).get("metadata_columns", []) if unfilterable(c)]
        if odd:
            notes.append(f"metadata column(s) {', '.join(repr(c) for c in odd)} are kept but --where cannot select on them "
                         "(named like a built-in key, or holding one of = , | < > ! \\); rename them in the source to filter on them")
        t_model = time.perf_counter()
        if like is not None:
            svc = EmbeddingService.from_provenance(like, weights, dev, prec, error=BuildError, accel="none" if cluster else accel)
        else:
            overrides = dict(crop_pct=crop_pct, interpolation=interpolation, resize_mode=resize_mode)
            svc = EmbeddingService.create(encoder, weights, layer, normalize, dtype, texts, dev, prec, overrides=overrides,
                                          accel="none" if cluster else accel)  # Ray actors run eager
        model_load_s = time.perf_counter() - t_model
        if like is None:
            if not texts and svc.modality == "image" and not any(v is not None for v in overrides.values()):
                notes.extend(_fit_preprocess_to_images(svc, src, store))
        recorded = _recorded_precision(store, svc)
        if recorded is not None:
            if precision == "auto" and cluster is not None:
                dev, prec, _ = cluster.plan(device, build_precision_here(recorded, "auto", _torch_device(cluster.device))[0], actors)
                prec_reason = f"auto: the set was built at {recorded}"
            elif precision == "auto":
                chosen, why = build_precision_here(recorded, "auto", svc.device)
                if chosen != svc.precision:
                    svc.set_precision(chosen, f"auto: {why}")
                else:
                    svc.precision_reason = f"auto: {why}"
            elif precision != recorded:
                raise BuildError(f"{Path(store).name} holds {svc.cfg.id} vectors computed at {recorded}; adding {precision} vectors "
                                 f"would mix precisions in one set; pass --precision {recorded} (or auto), or build a new store")
        if threads and accelerated and svc.accel == "none":  # eager after all (e.g. a set built at bf16)
            import torch

            workers, threads = cpu_split(os.cpu_count() or 1, asked_workers)
            torch.set_num_threads(threads)
        dev, prec_reason = svc.device, prec_reason or svc.precision_reason
        prec = prec if cluster is not None else svc.precision
        if texts != (svc.modality == "text"):
            if texts:
                raise BuildError(f"{src.path} is a text source but {svc.cfg.id} embeds images; use a text encoder, "
                                 "e.g. --encoder st:all-MiniLM-L6-v2 (see `embed encoders`)")
            raise BuildError(f"{svc.cfg.id} embeds texts but {src.path} is a source of images; pass a .txt/.jsonl file or a "
                             "CSV/Parquet file with a 'text' column, or choose an image encoder")
        if cluster is not None:
            workers = cluster.decode_slots
        elif texts:
            workers = 0
        elif workers is None and not threads:
            workers = default_workers(dev)
        if batch_size is None:
            batch_size = CPU_BATCH_SIZE if threads else GPU_BATCH_SIZE
        prov, dtype = svc.provenance, svc.dtype
        set_name = svc.set_name
        set_attrs = _set_attrs(prov, set_name)
        if prec in ("fp32", "bf16", "fp16"):  # Ray's "auto" is resolved on each actor: not known here, not recorded
            set_attrs[BUILD_PRECISION] = prec  # queries reproduce it (EmbeddingService.from_provenance); not in the set's key
        report = BuildReport(store=str(Path(store).resolve()), source=src.path, encoder=svc.cfg.id, vector_set=set_name,
                             device=str(dev), precision=prec, precision_reason=prec_reason, dtype=dtype,
                             batch_size=batch_size, workers=workers, encoder_threads=threads, items_in_source=items_in_source,
                             skipped={k: len(v) for k, v in src.skipped.items()},
                             skipped_paths={k: [str(p) for p in v[:5]] for k, v in src.skipped.items()},
                             skipped_fix={k: SKIP_FIXES[k] for k in src.skipped if k in SKIP_FIXES}, engine=engine,
                             cluster=cluster.describe() if cluster else {}, layout=layout_found,
                             notes=notes, excluded=excluded_info.get("left_out", 0), exclusions=excluded_info)
        with open_store(store, mode="a", create=True) as st:
            stored = st.stored_items()
            plan = make_plan(src.items, stored, st.live_rows(set_name, stored), has_metadata=src.has_metadata,
                             folder=src.path if src.kind == "folder" else None, retry_quarantined=retry_quarantined,
                             manifest=src.kind == "manifest", rehash=rehash,
                             excluded=sorted(exclusions.ids) if exclusions is not None else None)
            del stored
            if len(plan.todo) or plan.metadata_only:
                # converts (or loads) and checks the accelerated forward; not in the set's key. Only when
                # something will be written: a rebuild with nothing to do does not load it (0.5-1.5 s)
                set_attrs.update(svc.accel_attrs())
                report.notes.extend(svc.accel_notes())
            report.accel, report.accel_reason = svc.accel, svc.accel_reason
            report.unchanged, report.previously_quarantined = plan.unchanged, plan.previously_quarantined
            report.moved = plan.moved
            if plan.gone:
                where = f"under {src.path}" + (" (or where its files were before they moved)" if plan.moved else "")
                report.notes.append(f"{plan.gone} item(s) of the store came from files {where} that no longer exist "
                                    f"(deleted, or moved to another folder), e.g. {plan.gone_example}; they stay in the store "
                                    f"with their old labels: list them with `embed ls {store} --status missing > gone.txt` "
                                    "and leave them out of heads with --exclude gone.txt, or rebuild into a new store")
            if plan.unlisted:
                why = ("not listed in this manifest (rows removed since an earlier build, or items another source brought)"
                       if src.kind != "folder" else "from files under it that this build does not read (skipped below)")
                report.notes.append(f"{plan.unlisted} item(s) of the store are {why}, e.g. {plan.unlisted_example}; they "
                                    f"stay in the store: list them with `embed ls {store} --not-in {source} > unlisted.txt` "
                                    "and leave them out of heads with --exclude unlisted.txt")
            if plan.meta_kept:  # kept on purpose (make_plan), but a manifest that dropped its columns expects otherwise
                report.notes.append(f"{plan.meta_kept} item(s) keep the metadata the store holds for them (e.g. for --where): "
                                    "this source has no metadata columns; to clear it, build from a manifest that has "
                                    "those columns left empty")
            writer = ShardWriter(st, set_name, set_attrs, {"device": str(dev), "precision": prec}, svc.dim, dtype,
                                 shard_rows=shard_rows, commit_seconds=commit_seconds,
                                 catalog_seconds=catalog_seconds,
                                 append=plan.new_only and not plan.metadata_only)
            if plan.metadata_only:
                writer.put([{**ex, "label": it.label, "split": it.split, "meta": it.meta or ""} for it, ex in plan.metadata_only])
                report.metadata_updated += len(plan.metadata_only)
            t_loop = time.perf_counter()
            report.startup_s, report.model_load_s = t_loop - t_start, model_load_s
            if cluster is not None:
                writer.close()
                cluster.run(st, plan.todo, svc, weights, set_attrs, batch_size, shard_rows, report, progress)
            else:
                feed = _run_local(plan.todo, svc, writer, batch_size, workers, report, progress, decode,
                                  cores=(os.cpu_count() or 1) if threads and asked_workers is None else None,
                                  reuse=plan.reuse)
                if decode == "device" and not texts:
                    report.decode = decode
                    report.notes.append(f"--decode device: {report.decoded_on_device} JPEG file(s) decoded on {dev} in the "
                                        f"encoder's process, the other {max(0, report.encoded - report.decoded_on_device)} "
                                        "image(s) on the CPU")
            t_finish = time.perf_counter()
            report.loop_s = t_finish - t_loop
            report.notes.extend(image_note_lines(report.image_notes))
            if cluster is None:
                report.decode_wait_share = report.read_s / report.loop_s if report.loop_s > 0 else 0.0
                report.load_average = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
                report.advice = [] if texts else decode_advice(_since_raised(report, feed), os.cpu_count() or 1)
            # the per-item lists are done with: free them before the final refresh, where a build peaks
            src.items, plan = [], None
            release_freed_memory()  # their pages, before the refresh and index build add theirs (memory.py)
            if cluster is None and writer.shards == 0 and not report.interrupted and st.up_to_date():
                report.catalog_rewritten = False  # nothing committed and nothing to repair: the catalog stands
            elif cluster is None and writer.append and st.finish_append(index=not report.interrupted):
                report.catalog_rewritten, report.catalog_appended = False, True  # the build's rows only (store/segments.py)
            else:
                st.refresh(index=not report.interrupted, parallel=cluster.index_adder() if cluster else None)
            report.finish_s = time.perf_counter() - t_finish
            report.notes.extend(st.notes)  # repairs on open (damaged shards moved aside, index rebuilt), ignored files
            vs = next((v for v in st.vector_sets() if v.name == set_name), None)
            report.vectors_in_set = vs.count if vs else 0
            if not report.vectors_in_set and report.quarantined and not report.interrupted:
                report.notes.append(f"none of the source's files could be embedded (all {report.quarantined} quarantined, "
                                    "reasons below): the set holds no vectors; add images and build again")
            report.index = {k: v for k, v in (vs.index if vs else {}).items() if k != "ids_sha256"}
        report.wall_s = time.perf_counter() - t_start
        report.items_per_s = report.encoded / report.wall_s if report.wall_s > 0 else 0.0
        report.loop_items_per_s = report.encoded / report.loop_s if report.loop_s > 0 else 0.0
        if report.interrupted:
            raise KeyboardInterrupt
    finally:
        if threads_before is not None:
            import torch

            torch.set_num_threads(threads_before)
        if cluster is not None:
            cluster.close()
    return report


def store_encoder(store, encoder: str | None, like: dict | None, texts: bool = False, **options) -> tuple[str, dict | None, str]:
    """(encoder, like, note) for a build not told its encoder: into a store that holds built
    vectors of the source's kind (`texts`), the encoder of the default one of them (as
    `Store.select_set` picks: most vectors, then newest), and with no other embedding option
    (`options`: weights, layer, dtype, normalize, preprocessing) exactly as that set was made (its
    provenance, as --like STORE). Re-embedding a store's items, as `embed verify` advises after a
    repair, once used the default encoder instead: a second set, which then became the store's
    default. Else DEFAULT_ENCODER."""
    if like is not None or encoder is not None:
        return encoder or DEFAULT_ENCODER, like, ""
    from ..store.store import default_rank

    if not Path(store).is_file():
        return DEFAULT_ENCODER, None, ""
    try:
        with open_store(store) as st:
            kind = "text" if texts else "image"
            built = [v for v in st.vector_sets() if not str(v.encoder).startswith("external:")
                     and v.provenance.get("modality", "image") == kind]
            if not built:
                return DEFAULT_ENCODER, None, ""
            vs = max(built, key=default_rank)
            prov = dict(vs.provenance)
    except StoreError as e:
        raise BuildError(f"cannot tell which encoder made the vectors of {store} ({e}); pass --encoder") from None
    if any(v is not None for v in options.values()):
        return str(prov["encoder"]), None, f"encoder {prov['encoder']}: that of the store's vector set {vs.name} (--encoder to choose another)"
    return str(prov["encoder"]), prov, (f"encoder {prov['encoder']}, as the store's vector set {vs.name} was made "
                                        "(--encoder to embed with another)")


def _recorded_precision(store, svc: EmbeddingService) -> str | None:
    """The precision the store's vector set for `svc` was built at, if it exists and records one:
    from the catalog, else from its shards (a catalog that is gone or unreadable is rebuilt from them
    by the writer, and sets built before `build_precision` existed record each shard's `precision`).
    Every shard is tried until one answers: a damaged one is moved aside by the writer later."""
    from ..store.schema import sidecar_dir
    from ..store.shards import list_shards

    if Path(store).exists():
        try:
            with open_store(store) as st:
                vs = st.find_set(svc.provenance)
                if vs is not None and vs.count and vs.attrs.get(BUILD_PRECISION):
                    return str(vs.attrs.get(BUILD_PRECISION))
        except StoreError:  # a store only a writer can open (e.g. to repair after a kill): ask its shards
            pass
    folder = sidecar_dir(store) / "shards" / svc.set_name
    for name in list_shards(folder):
        try:
            import h5py

            with h5py.File(folder / name, "r") as f:
                for key in (BUILD_PRECISION, "precision"):
                    v = f.attrs.get(key)
                    v = v.decode() if isinstance(v, bytes) else (None if v is None else str(v))
                    if v in ("fp32", "bf16", "fp16"):
                        return v
        except Exception:  # noqa: BLE001 - any unreadable shard: try the next (the writer moves it aside)
            continue
    return None


def _torch_device(name: str):
    import torch

    return torch.device(name)


def _fit_preprocess_to_images(svc: EmbeddingService, src, store) -> list[str]:
    """When most of the source's images are smaller than the model's input, resize them straight
    to it instead of cropping a border away (encoders.config.small_image_preprocess says why) --
    unless the store already holds this encoder's vectors made the other way (the model's own, or
    the small-image one from when most images were small): then those are extended, either way, so
    one source does not split over two vector sets as it grows."""
    from ..encoders.config import small_image_preprocess
    from ..sources.images import sample_image_sizes

    pp = svc.cfg.preprocess
    small = pp.override(crop_pct=1.0, resize_mode="squash")
    if small == pp:
        return []
    chosen, note = small_image_preprocess(pp, sample_image_sizes([it.uri for it in src.items if it.text is None]))
    repaired: list[str] = []
    held = _held_preprocess(svc, store, (chosen, small if chosen == pp else pp), repaired)
    if held is not None and held != chosen:
        svc.encoder.set_preprocess(held)
        what = "the small-image preprocessing" if held == small else "the model's preprocessing"
        return repaired + [f"{note.split(';')[0] + '; ' if note else ''}kept {what} ({held.describe()}) because this store already "
                f"holds this encoder's vectors made with it (pass --resize-mode and --crop-pct for a new vector set)"]
    svc.encoder.set_preprocess(chosen)
    return repaired + ([note] if note else [])


def _held_preprocess(svc: EmbeddingService, store, candidates, notes: list):
    """The first of `candidates` the store holds a vector set of this encoder made with, or None.
    A damaged shard is moved aside here, as the build's own open would, and `notes` says so."""
    if not Path(store).exists():
        return None
    def find(st):  # a set without vectors (every file of its builds quarantined) holds nothing to keep consistent with
        for pp in candidates:
            svc.encoder.set_preprocess(pp)
            vs = st.find_set(svc.provenance)
            if vs is not None and vs.count:
                return pp
        return None

    try:
        with open_store(store) as st:
            return find(st)
    except StoreError:  # e.g. a damaged shard or catalog: a writer repairs it (as the build's own open would)
        with open_store(store, mode="a") as st:
            notes.extend(st.notes)
            return find(st)


def _since_raised(r: BuildReport, feed) -> BuildReport:
    """The report as decode advice should read it: when the build raised its decode workers, the
    loop since then (the workers it ended with), and a note of what it did."""
    if feed is None or not feed.raised:
        return r
    r.workers = feed.workers
    for x in feed.raised:
        r.notes.append(f"decode workers raised from {x['from']} to {x['to']} after {x['at']} items: the encoder had waited on "
                       f"decode for {x['waited']:.0%} of the loop (large images decode slowly); --workers N fixes the number")
    waited, loop = feed.window()
    if loop < ADAPT_SECONDS:  # too short a stretch since the raise to say anything: the whole loop speaks
        return r
    return replace(r, read_s=waited, loop_s=loop, first_batch_wait_s=0.0, decode_wait_share=waited / loop)


# The encoder waited on decode for at least this share of the loop, and this long, before the
# summary says what to change: below either, decoding is not what limits the build.
WAIT_SHARE_ADVICE = 0.25
WAIT_SECONDS_ADVICE = 1.0


def decode_advice(r: BuildReport, cores: int) -> list[str]:
    """What to change when the encoder waited on decode; nothing when it did not matter."""
    if r.engine != "local" or r.decode_wait_share < WAIT_SHARE_ADVICE or r.read_s < WAIT_SECONDS_ADVICE:
        return []
    said = (f"the encoder waited on decode for {r.decode_wait_share:.0%} of the loop ({r.read_s:.1f} s of "
            f"{r.loop_s:.1f} s) with {r.workers} decode worker(s) on {cores} core(s), load average {r.load_average:.1f}")
    if r.first_batch_wait_s >= 0.5 * r.read_s:  # steady state kept up: the wait was filling the first batch
        smaller = max(1, r.batch_size // 4)
        return [f"{said}; most of it ({r.first_batch_wait_s:.1f} s) before the first batch of {r.batch_size}: "
                f"a smaller --batch-size {smaller} starts the encoder sooner"]
    if r.workers == 0:
        return [f"{said}; decoding ran in the encoder's process: add --workers 1"]
    # decoding must go loop_s / (loop_s - read_s) times as fast for the encoder never to wait
    want = min(cores, max(r.workers + 1, int(r.workers * r.loop_s / max(r.loop_s - r.read_s, 1e-9) + 0.999)))
    if r.workers < cores:
        return [f"{said}; add decode workers: --workers {want}"]
    return [f"{said}; the workers already have every core, so decoding is what this machine can do: the "
            "images may be large for the model, or other work is taking the CPU"]


def _run_local(todo, svc: EmbeddingService, writer, batch_size, workers, report, progress, decode: str = "workers",
               cores: int | None = None, reuse=None):
    """The single-machine loop: DataLoader workers read, this process encodes, a thread writes.
    With decode="device" the workers pass JPEG files on undecoded, and each batch is decoded and
    finished on the encoder's device before its forward. `cores`: the workers may grow to that
    many when the encoder waits on them (loader.Feed). `reuse` (plan.Plan.reuse): files with the
    bytes of a gone item get its vector, copied from the set once the loop ends (`ShardWriter.put_copies`).
    Returns the Feed (None for texts)."""
    svc.place()
    on_device = decode == "device" and svc.modality == "image"
    if svc.modality == "text":
        from .texts import text_batches

        loader, feed = text_batches(todo, batch_size), None
    else:
        loader = feed = Feed(todo, svc.pixels(uint8=on_device), batch_size, workers, svc.device.type == "cuda", on_device,
                             cores=None if on_device else cores, reuse=reuse)
    copies: list[tuple[dict, str]] = []  # (item row, id whose vector it gets)
    bar = progress_bar(len(todo), desc=f"embed {svc.cfg.id}", enabled=progress and bool(todo))
    try:
        it = iter(loader)
        while True:
            t0 = time.perf_counter()
            batch = next(it, None)  # read: decode + preprocess in workers
            t1 = time.perf_counter()
            if batch is None:
                break
            if on_device:
                report.decoded_on_device += batch.on_device(svc.pixels(), svc.device)[0]
            vecs = svc.forward(batch.pixels) if batch.ok else None
            if batch.ok and isinstance(batch.pixels, list):
                report.truncated += svc.count_truncated(batch.pixels)
            t2 = time.perf_counter()
            rows, vec_rows, keep = _sort_batch(todo, batch, vecs, svc.dtype, report, copies)
            writer.put(rows, vecs[keep] if vecs is not None else None, vec_rows)
            t3 = time.perf_counter()
            if not report.read_s:
                report.first_batch_wait_s = t1 - t0
            report.read_s += t1 - t0
            report.encode_s += t2 - t1
            report.write_s += t3 - t2
            bar.update(len(batch.loaded))
            bar.set_postfix(quarantined=report.quarantined, refresh=False)
        if copies:
            t0 = time.perf_counter()
            writer.put_copies(copies)
            report.reused += len(copies)
            report.write_s += time.perf_counter() - t0
    except KeyboardInterrupt:
        report.interrupted = True
    finally:
        bar.close()
        writer.close()  # commits whatever was encoded, even when interrupted
        report.write_s += writer.busy_seconds
        report.shards_written = writer.shards
        report.catalog_updates, report.catalog_appends = writer.catalog_refreshes, writer.catalog_appends
        report.catalog_update_s = writer.catalog_seconds_spent
        if writer.catalog_errors:
            report.notes.append(f"{len(writer.catalog_errors)} catalog update(s) during the build failed (readers saw "
                                f"less progress meanwhile; the final refresh below is what counts): {writer.catalog_errors[0]}")
    return feed


def _sort_batch(tasks, batch, vecs, dtype: str, report: BuildReport, copies: list | None = None):
    """Turn a loaded batch into item rows; quarantine bad files and non-finite vectors. Items whose
    vector is to be copied from a gone item (`Loaded.copy_of`) go to `copies` as (row, that id)."""
    rows, vec_rows, keep = [], [], []
    pos_of = {k: n for n, k in enumerate(batch.ok)}
    for k, ld in enumerate(batch.loaded):
        task = tasks[ld.index]
        if ld.copy_of and copies is not None:
            copies.append((_row(task, ld.sha256), ld.copy_of))
            continue
        what, reason = outcome(ld.reason, ld.unchanged, vecs[pos_of[k]] if k in pos_of else None, dtype)
        row = _row(task, ld.sha256, STATUS_QUARANTINED if reason else STATUS_OK, reason or "")
        rows.append(row)
        if what == "unchanged" and task.relabelled:  # same bytes, new label/split/metadata: the row is rewritten
            report.metadata_updated += 1
        elif what == "unchanged":
            report.unchanged += 1
        elif what == "encoded":
            vec_rows.append(row)
            keep.append(pos_of[k])
            report.encoded += 1
            if ld.notes:
                add_image_notes(report.image_notes, task.item.id, ld.notes)
        else:
            report.quarantined += 1
            report.quarantined_items.append({"id": task.item.id, "uri": task.item.uri, "reason": reason})
    return rows, vec_rows, np.asarray(keep, dtype=np.int64)

