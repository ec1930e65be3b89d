"""`export`: a vector set -> `DIR/emb/part-NNNNN.npy` + `DIR/metadata/part-NNNNN.parquet` (row i of
one is row i of the other; ids, labels, splits, uris), or `DIR/emb/part-NNNNN.parquet` with an
`embedding` column. Streamed part by part: memory stays at one part however large the set."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import OptionError

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


def _meta_table(rows, pos: np.ndarray):
    import pyarrow as pa

    cols = {"id": rows.ids[pos], "label": rows.labels[pos], "split": rows.splits[pos], "uri": rows.uris[pos]}
    if rows.texts is not None and any(rows.texts[pos]):
        cols["text"] = rows.texts[pos]
    return pa.table({k: pa.array(v, pa.string()) for k, v in cols.items()})


def export(store: str | Path, out: str | Path, fmt: str = "npy", vector_set: str | None = None, part_rows: int = 65536,
           dtype: str | None = None, progress: bool = True) -> ExportReport:
    """Write the set's vectors and metadata under `out` (a new folder), renamed into place when complete."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..atomic import atomic_path
    from ..progress import progress_bar
    from ..store import open_store

    if fmt not in FORMATS:
        raise OptionError(f"--format must be one of {', '.join(FORMATS)}, not '{fmt}'")
    if dtype not in (None, "float16", "float32"):
        raise OptionError(f"--dtype must be float16 or float32, not '{dtype}'")
    if part_rows < 1:
        raise OptionError(f"--part-rows must be at least 1, not {part_rows}")
    out = Path(out)
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
        for start, X in rows.slabs(chunk_rows=part_rows):
            pos = np.arange(start, start + len(X))
            name = f"part-{parts:05d}"
            meta = _meta_table(rows, pos)
            if fmt == "npy":
                np.save(tmp / "emb" / f"{name}.npy", X.astype(dt, copy=False))
                pq.write_table(meta, tmp / "metadata" / f"{name}.parquet")
            else:
                flat = pa.array(X.astype(dt, copy=False).reshape(-1))
                emb = pa.FixedSizeListArray.from_arrays(flat, X.shape[1])
                pq.write_table(meta.append_column("embedding", emb), tmp / "emb" / f"{name}.parquet")
            nbytes += X.shape[0] * X.shape[1] * dt.itemsize
            parts += 1
            bar.update(len(pos))
        (tmp / MANIFEST).write_text(json.dumps({
            "format": fmt, "vector_set": vs.name, "rows": len(rows), "dim": rows.dim, "dtype": dt.name, "parts": parts,
            "provenance": {k: v for k, v in vs.attrs.items() if not k.startswith("index_") and k not in ("count", "stale_rows")},
            "exported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=1, default=str))
    return ExportReport(str(store), vs.name, str(out), fmt, len(rows), parts, rows.dim, dt.name, nbytes, time.perf_counter() - t0)
