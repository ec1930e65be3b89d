"""`export`: a vector set -> `DIR/emb/part-NNNNN.npy` + `DIR/metadata/part-NNNNN.parquet` (row i of
one is row i of the other; ids, labels, splits, uris, content hashes), or `DIR/emb/part-NNNNN.parquet` with an
`embedding` column. Streamed chunk by chunk: memory stays at one chunk of vectors (one part of them for
`--format parquet`) however large the set."""

from __future__ import annotations

import itertools
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import OptionError, StoreError

FORMATS = ("npy", "parquet")
MANIFEST = "embedstore_export.json"


@dataclass
class ExportReport:
    store: str
    vector_set: str
    out: str
    format: str
    rows: int
    parts: int
    dim: int
    dtype: str
    bytes: int
    seconds: float

    def to_dict(self) -> dict:
        return {**asdict(self), "rows_per_s": self.rows / self.seconds if self.seconds else None}


def _meta_table(meta: dict):
    """The metadata parquet columns of one part (sha256: each item's content hash, by which `embed
    import` joins a vector to the item a store holds; a text column only when some item has text, a
    meta column, each item's metadata columns as JSON, only when some item has metadata). Each
    column comes as the catalog's row text (`store.rowtext.Texts`) and goes to Arrow without a
    Python object per value; pyarrow never imports pandas (its converter of Python objects does,
    a quarter of a second per export)."""
    import pyarrow as pa

    cols = {k: meta[k].arrow() for k in ("id", "label", "split", "uri", "sha256")}
    for k in ("text", "meta"):
        if meta[k].any():
            cols[k] = meta[k].arrow()
    return pa.table(cols)


def _pieces(rows, part_rows: int):
    """(part number, vectors, metadata) in row order, cut at every `part_rows` rows; the store's
    chunks are checked as they are read (see `SetRows.stream`)."""
    keys = ("id", "label", "split", "uri", "sha256", "text", "meta")
    for start, X, meta in rows.stream(chunk_rows=16384, columns=keys, raw=True):
        at = 0
        while at < len(X):
            part, off = divmod(start + at, part_rows)
            take = min(len(X) - at, part_rows - off)
            yield part, X[at : at + take], {k: meta[k][at : at + take] for k in keys}
            at += take


class _Writer:
    """File writes on one background thread, in the order given, at most `depth` jobs queued: the
    store is read (h5py, which holds its own lock) while the last chunk goes to disk (writes
    release the GIL). A finished file is flushed to disk (fsync) on a second thread while the next
    one is written: one after the other, the syncs took about a third of an export. The first
    failed job's error is raised in the caller's thread."""

    def __init__(self, depth: int = 4):
        from concurrent.futures import ThreadPoolExecutor

        self.pool = ThreadPoolExecutor(1, thread_name_prefix="export-write")
        self.sync_pool = ThreadPoolExecutor(1, thread_name_prefix="export-sync")
        self.pending: list = []
        self.syncs: list = []
        self.depth = depth

    def submit(self, fn, *args) -> None:
        self.pending.append(self.pool.submit(fn, *args))
        while len(self.pending) > self.depth or (self.pending and self.pending[0].done()):
            self.pending.pop(0).result()
        while self.syncs and (self.syncs[0].done() or len(self.syncs) > self.depth):  # each holds an open file
            self.syncs.pop(0).result()

    def synced_close(self, fh) -> None:
        """Close `fh` once its writes are done and its bytes are on disk."""
        self.submit(self._flush_then_sync, fh)

    def _flush_then_sync(self, fh) -> None:  # on the write thread, after the file's writes
        fh.flush()
        self.syncs.append(self.sync_pool.submit(_fsync_close, fh))

    def drain(self) -> None:
        while self.pending:
            self.pending.pop(0).result()
        while self.syncs:
            self.syncs.pop(0).result()

    def close(self) -> None:
        for f in self.pending:
            f.cancel()
        self.pool.shutdown(wait=True)
        self.sync_pool.shutdown(wait=True)


def _fsync_close(fh) -> None:
    try:
        os.fsync(fh.fileno())
    finally:
        fh.close()


def _write_npy_part(writer: _Writer, path: Path, rows: int, dim: int, dt: np.dtype, pieces) -> list[dict]:
    """Write one `.npy` part piece by piece (the bytes np.save writes, without holding the part);
    return the pieces' metadata."""
    from numpy.lib import format as npformat

    metas, written = [], 0
    fh = open(path, "wb")
    try:
        writer.submit(npformat.write_array_header_1_0, fh,
                      {"descr": npformat.dtype_to_descr(dt), "fortran_order": False, "shape": (rows, dim)})
        for _part, X, meta in pieces:
            writer.submit(fh.write, np.ascontiguousarray(X, dtype=dt).data)
            written += len(X)
            metas.append(meta)
        writer.synced_close(fh)
    except BaseException:
        writer.close()
        fh.close()
        raise
    if written != rows:  # the store changed under a pinned snapshot: never leave a part that lies about its size
        raise StoreError(f"export wrote {written} rows into {path.name}, expected {rows}")
    return metas


def _joined(metas: list[dict]) -> dict:
    from ..store.rowtext import Texts

    return {k: Texts.concat([m[k] for m in metas]) for k in metas[0]}


def export(store: str | Path, out: str | Path, fmt: str = "npy", vector_set: str | None = None, part_rows: int = 65536,
           dtype: str | None = None, progress: bool = True) -> ExportReport:
    """Write the set's vectors and metadata under `out` (a new folder), renamed into place when complete."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..atomic import atomic_path, check_output_folder
    from ..progress import progress_bar
    from ..store import open_store

    if fmt not in FORMATS:
        raise OptionError(f"--format must be one of {', '.join(FORMATS)}, not '{fmt}'")
    if dtype not in (None, "float16", "float32"):
        raise OptionError(f"--dtype must be float16 or float32, not '{dtype}'")
    if part_rows < 1:
        raise OptionError(f"--part-rows must be at least 1, not {part_rows}")
    out = check_output_folder(out, "--out", "the exported parts", fix="choose a new folder")
    if out.exists():
        raise OptionError(f"--out {out} already exists; choose a new folder (export never mixes its files with others)")
    with open_store(store) as st:
        vs = st.select_set(vector_set)
        rows = st.rows(vs.name).pin()  # one consistent snapshot even if a build commits meanwhile
    dt = np.dtype(dtype or vs.provenance.get("dtype", "float32"))
    t0 = time.perf_counter()
    parts, nbytes = 0, 0
    with atomic_path(out) as tmp, progress_bar(len(rows), f"export {fmt}", "row", progress) as bar:
        (tmp / "emb").mkdir(parents=True)
        if fmt == "npy":
            (tmp / "metadata").mkdir()
        n = len(rows)
        writer = _Writer()
        try:
            for part, pieces in itertools.groupby(_pieces(rows, part_rows), key=lambda p: p[0]):
                name = f"part-{part:05d}"
                size = min(part_rows, n - part * part_rows)
                if fmt == "npy":
                    metas = _write_npy_part(writer, tmp / "emb" / f"{name}.npy", size, rows.dim, dt, pieces)
                    writer.submit(pq.write_table, _meta_table(_joined(metas)), tmp / "metadata" / f"{name}.parquet")
                else:
                    got = list(pieces)
                    X = np.concatenate([p[1] for p in got]) if len(got) > 1 else got[0][1]
                    flat = pa.array(X.astype(dt, copy=False).reshape(-1))
                    emb = pa.FixedSizeListArray.from_arrays(flat, X.shape[1])
                    writer.submit(pq.write_table, _meta_table(_joined([p[2] for p in got])).append_column("embedding", emb),
                                  tmp / "emb" / f"{name}.parquet")
                nbytes += size * rows.dim * dt.itemsize
                parts += 1
                bar.update(size)
            writer.drain()
        finally:
            writer.close()
        (tmp / MANIFEST).write_text(json.dumps({
            "format": fmt, "vector_set": vs.name, "rows": len(rows), "dim": rows.dim, "dtype": dt.name, "parts": parts,
            "provenance": {k: v for k, v in vs.attrs.items() if not k.startswith("index_") and k not in ("count", "stale_rows")},
            "exported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=1, default=str))
    return ExportReport(str(store), vs.name, str(out), fmt, len(rows), parts, rows.dim, dt.name, nbytes, time.perf_counter() - t0)
