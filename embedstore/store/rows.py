"""The one vector reader: a vector set's rows joined with the items table, streamed in chunks by
row mask from the catalog (`SetRows.chunks`, `fetch`, `load`), and the shard pieces the index
builder reads before the catalog lists them (`read_runs`). Every block is checked before use."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import StoreError


@dataclass
class SetRows:
    """Row-aligned metadata of one vector set (ids, labels, splits, uris); vectors stay on disk."""

    store_path: str
    catalog: object  # Path of the catalog file
    set_name: str
    provenance: dict
    ids: np.ndarray
    labels: np.ndarray
    splits: np.ndarray
    uris: np.ndarray
    texts: np.ndarray | None = None  # text stores: each item's text
    shas: np.ndarray | None = None  # each item's content sha256 (hex)
    _reader: object = field(default=None, repr=False, compare=False)  # open dataset for `fetch`
    _pinned: object = field(default=None, repr=False, compare=False)  # catalog held open by `pin`

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return int(self.provenance["dim"])

    def chunks(self, mask: np.ndarray | None = None, chunk_rows: int = 16384) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (row positions, float32 vectors) for the rows where `mask` is true, in row order.

        Reads contiguous slabs and selects in memory: memory stays at one slab however large the set."""
        import h5py

        n = len(self.ids)
        if mask is not None and not mask.any():
            return
        with (_Borrowed(self._pinned) if self._pinned is not None else h5py.File(self.catalog, "r")) as f:
            ds = f["vectors"][self.set_name]["vectors"]
            for s in range(0, n, chunk_rows):
                e = min(n, s + chunk_rows)
                sel = np.arange(s, e) if mask is None else np.flatnonzero(mask[s:e]) + s
                if len(sel) == 0:
                    continue
                block = ds[s:e].astype(np.float32)[sel - s]
                bad = ~np.isfinite(block).all(axis=1)
                if bad.any():
                    which = ", ".join(self.ids[sel[bad][:3]])
                    if np.isnan(block[bad]).all():
                        raise StoreError(f"vector set {self.set_name} reads NaN for {which}: a shard file under "
                                         f"{self.store_path}.d is missing or damaged; re-run `embed build` to re-embed those items")
                    raise StoreError(f"vector set {self.set_name} has non-finite values (NaN or inf) for {bad.sum()} item(s), "
                                     f"e.g. {which}; rebuild the store with `embed build` (float16 overflow: use --normalize l2)")
                yield sel, block

    def slabs(self, chunk_rows: int = 65536) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (first row, vectors in the stored dtype) for consecutive slabs of every row: the
        fastest full read (export), with the same finiteness check as `chunks`."""
        import h5py

        with (_Borrowed(self._pinned) if self._pinned is not None else h5py.File(self.catalog, "r")) as f:
            ds = f["vectors"][self.set_name]["vectors"]
            for s in range(0, len(self.ids), chunk_rows):
                block = ds[s : min(len(self.ids), s + chunk_rows)]
                if not np.isfinite(block).all():
                    next(self.chunks(np.isin(np.arange(len(self.ids)), np.arange(s, s + len(block))), chunk_rows))  # raises the error
                yield s, block

    def pin(self) -> "SetRows":
        """Hold the catalog open: every later read sees the rows these ids describe, even after a
        writer renames a new catalog into place (readers during a build keep a consistent snapshot)."""
        import h5py

        if self._pinned is None:
            self._pinned = h5py.File(self.catalog, "r")
            self._reader = self._pinned["vectors"][self.set_name]["vectors"]
        return self

    def fetch(self, positions: np.ndarray) -> np.ndarray:
        """A few rows by position (random access, for re-ranking search candidates), in that order.

        The catalog stays open between calls (opening it costs ~20 ms, a row ~10 us)."""
        import h5py

        if self._reader is None:
            self._reader = h5py.File(self.catalog, "r")["vectors"][self.set_name]["vectors"]
        ds = self._reader
        return np.stack([ds[int(p)] for p in positions]).astype(np.float32) if len(positions) else np.zeros((0, self.dim), np.float32)

    def load_at(self, positions: np.ndarray) -> np.ndarray:
        """Rows at `positions` (any order, no repeats), returned in that order."""
        mask = np.zeros(len(self.ids), dtype=bool)
        mask[positions] = True
        X = self.load(mask)  # in row order
        out = np.empty_like(X)
        out[np.argsort(positions)] = X
        return out

    def load(self, mask: np.ndarray | None = None) -> np.ndarray:
        """The selected rows as one float32 array (callers check the size against their memory budget)."""
        parts = [X for _, X in self.chunks(mask)]
        if not parts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate(parts)


class _Borrowed:
    """A pinned file used in a `with` block without closing it."""

    def __init__(self, f):
        self.f = f

    def __enter__(self):
        return self.f

    def __exit__(self, *exc):
        return False


def set_rows(store, set_name: str) -> SetRows:
    """Join a set's row ids with the items table (label, split, uri) of `store`."""
    vs = store.get_set(set_name)
    with store._file() as f:
        ids = f["vectors"][set_name]["ids"].asstr()[()]
    items = store.items()
    pos = {i: k for k, i in enumerate(items["id"])}
    try:
        at = np.fromiter((pos[i] for i in ids), dtype=np.int64, count=len(ids))
    except KeyError as e:
        raise StoreError(f"vector set {set_name} has a row for id {e.args[0]!r} that the items table lacks; "
                         "re-run `embed build` to repair the catalog") from None
    return SetRows(str(store.path), store.path, set_name, vs.provenance, ids,
                   items["label"][at], items["split"][at], items["uri"][at], items["text"][at], items["sha256"][at])


def runs_between(sl, start: int, stop: int) -> list[tuple[str, int, int, int]]:
    """The pieces of shard files that hold rows [start, stop) of a set: (shard, first, end, set row)."""
    out, pos = [], 0
    for shard, _n, a, b in sl.runs:
        lo, hi = max(start, pos), min(stop, pos + b - a)
        if lo < hi:
            out.append((shard, a + lo - pos, a + hi - pos, lo))
        pos += b - a
    return out


def read_runs(shard_root: Path, runs, chunk: int = 16384) -> Iterator[np.ndarray]:
    """Stream float32 rows of shard pieces (from `runs_between`) in chunks."""
    import h5py

    for shard, a, b, _row in runs:
        with h5py.File(shard_root / shard, "r") as f:
            ds = f["vectors"]
            for s in range(a, b, chunk):
                block = ds[s : min(b, s + chunk)].astype(np.float32)
                if not np.isfinite(block).all():
                    raise StoreError(f"shard {shard} holds non-finite vectors in rows {s}-{min(b, s + chunk)}: the file is "
                                     "damaged; delete it and re-run `embed build` to re-embed its items")
                yield block
