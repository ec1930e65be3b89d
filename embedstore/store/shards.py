"""Shard files: the unit of commit. Each is written under a temporary name and renamed into
place only when complete, so a killed writer never leaves a half shard that counts."""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import TMP_PREFIX, atomic_path
from ..atomic import remove_stale_temps as remove_stale_tmp  # noqa: F401  re-exported: the store sweeps shard folders with it
from .schema import ITEM_COLUMNS, ITEM_INT_COLUMNS, ITEM_STR_COLUMNS

_counter = itertools.count()


@dataclass
class ItemRows:
    """Columns of item records, appended row by row."""

    cols: dict[str, list] = field(default_factory=lambda: {c: [] for c in ITEM_COLUMNS})

    def append(self, **row) -> None:
        for c in ITEM_STR_COLUMNS:
            v = row.get(c)
            self.cols[c].append("" if v is None else str(v))
        for c in ITEM_INT_COLUMNS:
            self.cols[c].append(int(row.get(c) or 0))

    def __len__(self) -> int:
        return len(self.cols["id"])


@dataclass
class ShardMeta:
    """What the catalog needs from a shard: its item rows and which rows carry vectors."""

    name: str
    items: dict[str, np.ndarray]
    vector_ids: np.ndarray
    vector_sha256: np.ndarray
    n_vectors: int
    dim: int
    attrs: dict = field(default_factory=dict)


def commit_attrs(set_name: str, set_attrs: dict, device: str, precision: str, rows: int) -> dict:
    """A shard file's attributes: its set's provenance plus how and when this shard was made.
    Every writer (the local build's thread, Ray's write tasks) takes them from here."""
    return {**set_attrs, "device": device, "precision": precision, "rows": rows, "set_name": set_name,
            "committed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _str_dataset(group, name: str, values) -> None:
    import h5py

    group.create_dataset(name, data=np.array(values, dtype=object), dtype=h5py.string_dtype("utf-8"))


def write_shard(
    directory: Path,
    items: ItemRows,
    vector_ids: list[str],
    vector_sha256: list[str],
    vectors: np.ndarray,
    attrs: dict,
    name: str | None = None,
) -> str:
    """Write one shard atomically (temp file, fsync, rename); return its file name.

    Names sort in commit order (the latest commit of an id wins). A given `name` replaces a shard
    of that name whole: a retried Ray task rewrites its shard rather than adding a second copy."""
    import h5py

    directory.mkdir(parents=True, exist_ok=True)
    name = name or f"{time.time_ns():020d}-{os.getpid()}-{next(_counter):06d}.h5"
    with atomic_path(directory / name) as tmp, h5py.File(tmp, "w") as f:
        for k, v in attrs.items():
            f.attrs[k] = v
        g = f.create_group("items")
        for c in ITEM_STR_COLUMNS:
            _str_dataset(g, c, items.cols[c])
        for c in ITEM_INT_COLUMNS:
            g.create_dataset(c, data=np.asarray(items.cols[c], dtype=np.int64))
        _str_dataset(f, "vector_ids", vector_ids)
        _str_dataset(f, "vector_sha256", vector_sha256)
        n, d = vectors.shape
        chunk_rows = max(1, min(n, (1 << 20) // max(1, d * vectors.dtype.itemsize)))
        f.create_dataset("vectors", data=vectors, chunks=(chunk_rows, d) if n else None)
    return name


def read_shard_meta(path: Path) -> ShardMeta:
    import h5py

    with h5py.File(path, "r") as f:
        g = f["items"]
        n = len(g["id"])
        items = {c: g[c].asstr()[()] if c in g else np.full(n, "", dtype=object) for c in ITEM_STR_COLUMNS}
        items.update({c: g[c][()] for c in ITEM_INT_COLUMNS})
        n, d = f["vectors"].shape
        return ShardMeta(
            name=path.name,
            items=items,
            vector_ids=f["vector_ids"].asstr()[()],
            vector_sha256=f["vector_sha256"].asstr()[()],
            n_vectors=int(n),
            dim=int(d),
            attrs={k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()},
        )


def list_shards(directory: Path) -> list[str]:
    if not directory.is_dir():
        return []
    return sorted(n for n in os.listdir(directory) if n.endswith(".h5") and not n.startswith(TMP_PREFIX))
