"""The FAISS index of a vector set: a sidecar file, extended when rows are appended and
rebuilt when rows change. Its type, size and measured recall live in a JSON beside it."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np


def ids_digest(ids: list[str]) -> str:
    h = hashlib.sha256()
    for i in ids:
        h.update(i.encode())
        h.update(b"\n")
    return h.hexdigest()


def index_paths(sidecar: Path, set_name: str) -> tuple[Path, Path]:
    d = sidecar / "index"
    return d / f"{set_name}.faiss", d / f"{set_name}.json"


def read_index_meta(sidecar: Path, set_name: str) -> dict | None:
    _, meta_path = index_paths(sidecar, set_name)
    try:
        return json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    write(str(tmp))
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def update_index(
    sidecar: Path,
    set_name: str,
    ids: list[str],
    dim: int,
    metric: str,
    read_rows: Callable[[int, int], Iterator[np.ndarray]],
) -> dict:
    """Bring the index in line with `ids` (the set's live rows, in order); return its metadata.

    Appended rows are added to the existing index; any other change rebuilds it.
    `read_rows(start, stop)` yields float32 chunks of those rows.
    """
    import faiss

    index_path, meta_path = index_paths(sidecar, set_name)
    meta = read_index_meta(sidecar, set_name)
    n = len(ids)
    start = 0
    index = None
    if meta and index_path.is_file() and meta.get("metric") == metric and meta.get("ntotal", -1) <= n:
        if meta["ntotal"] == n and meta.get("ids_sha256") == ids_digest(ids):
            return meta
        if meta.get("ids_sha256") == ids_digest(ids[: meta["ntotal"]]):
            index = faiss.read_index(str(index_path))
            start = index.ntotal
    if index is None:
        index = faiss.IndexFlatIP(dim) if metric == "inner_product" else faiss.IndexFlatL2(dim)
    for chunk in read_rows(start, n):
        index.add(np.ascontiguousarray(chunk, dtype=np.float32))
    if index.ntotal != n:
        raise RuntimeError(f"index of {set_name} has {index.ntotal} rows after update; expected {n}")
    index_path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(index_path, lambda p: faiss.write_index(index, p))
    meta = {
        "file": f"index/{index_path.name}",
        "type": "IndexFlatIP" if metric == "inner_product" else "IndexFlatL2",
        "metric": metric,
        "exact": True,
        "params": {},
        "ntotal": n,
        "recall_at_10": 1.0,
        "recall_note": "exact search",
        "ids_sha256": ids_digest(ids),
        "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "added_rows": n - start,
    }
    _atomic_write(meta_path, lambda p: Path(p).write_text(json.dumps(meta, indent=1)))
    return meta
