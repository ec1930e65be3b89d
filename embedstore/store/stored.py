"""The item table as a build's plan reads it: column-wise, checked, without a Python object per row.

A rebuild compares every source item with the stored one (same file? same labels? has a live
vector?). Read as a dict per item plus a set of live ids, the table cost ~1 KB a row (a no-op
rebuild of 800k rows peaked at 1.8 GB); here the columns the plan compares are Arrow strings and
int64 arrays, ids are found through a sorted array of their hashes, and the text column (the
longest) is checked but not kept.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .columns import objects, prefix_codes, take
from .schema import ITEM_COLUMNS, ITEM_INT_COLUMNS, ITEM_STR_COLUMNS

KEPT = ("id", "uri", "label", "split", "status", "meta")  # what make_plan compares; sha256 is read when needed
BLOCK = 1 << 16


class StoredItems:
    """The store's item table: `positions(ids)` finds rows, `gather(pos)` reads the kept columns of
    those rows, `records(pos)` whole rows (from the catalog file)."""

    def __init__(self, catalog, cols: dict, n: int, stat=None, damaged=None):
        self.catalog, self.cols, self.n = catalog, cols, n
        self.stat, self.damaged = stat, damaged  # the catalog's (size, mtime) when read; how to refuse it
        self._order: np.ndarray | None = None
        self._sorted: np.ndarray | None = None

    @classmethod
    def read(cls, catalog, damaged) -> "StoredItems":
        """Read `catalog`'s item table block by block, checking it against the checksum the catalog
        recorded (as `Store.items` does); `damaged(why)` makes the error to raise."""
        import h5py
        import pyarrow as pa

        from .shards import ItemsDigests, str_column

        from .integrity import shard_stat

        pool = pa.system_memory_pool()
        stat = shard_stat(Path(catalog))
        try:
            with h5py.File(catalog, "r") as f:
                g = f["items"]
                n = len(g["id"])
                digest, cols = ItemsDigests(g.attrs, n), {}
                prefixes, code_of, codes = [], {}, []
                for c in ITEM_STR_COLUMNS:
                    parts = []
                    for a in range(0, n, BLOCK):
                        vals = str_column(g, c, n, slice(a, a + BLOCK))
                        digest.strings(c, vals, a)
                        if c == "uri":
                            part_codes, vals = prefix_codes(vals, prefixes, code_of)
                            codes.append(part_codes)
                        if c in KEPT:
                            parts.append(pa.array(np.asarray(vals, dtype=object), pa.string(), memory_pool=pool))
                    if c in KEPT:
                        cols[c] = pa.chunked_array(parts, pa.string())
                cols["uri_prefix"] = (prefixes, np.concatenate(codes) if codes else np.zeros(0, dtype=np.int32))
                for c in ITEM_INT_COLUMNS:
                    cols[c] = np.asarray(g[c][()], dtype=np.int64)
                    digest.ints(cols[c])
        except (OSError, KeyError, ValueError, UnicodeDecodeError) as e:
            raise damaged(e) from None
        problem = digest.problem()
        if problem:
            raise damaged(problem)
        if shard_stat(Path(catalog)) != stat:
            raise damaged("it changed while its item table was read")
        return cls(catalog, cols, n, stat, damaged)

    def _index(self) -> None:
        if self._sorted is None:
            h = np.fromiter((hash(s) for a in range(0, self.n, BLOCK) for s in objects(self.cols["id"], a, a + BLOCK)),
                            dtype=np.int64, count=self.n)
            self._order = np.argsort(h, kind="stable")
            self._sorted = h[self._order]

    def positions(self, ids) -> np.ndarray:
        """Each id's row in the table, -1 where it has none."""
        ids = list(ids)
        out = np.full(len(ids), -1, dtype=np.int64)
        if self.n == 0 or not ids:
            return out
        self._index()
        h = np.fromiter((hash(i) for i in ids), dtype=np.int64, count=len(ids))
        j = np.minimum(np.searchsorted(self._sorted, h), self.n - 1)
        hit = np.flatnonzero(self._sorted[j] == h)
        if not len(hit):
            return out
        got = take(self.cols["id"], self._order[j[hit]])
        for k, i in enumerate(hit):
            if got[k] == ids[i]:
                out[i] = self._order[j[i]]
                continue
            r = j[i]  # two ids with one hash: look through every row with that hash
            while r < self.n and self._sorted[r] == h[i]:
                if take(self.cols["id"], [self._order[r]])[0] == ids[i]:
                    out[i] = self._order[r]
                    break
                r += 1
        return out

    def gather(self, pos: np.ndarray) -> dict[str, np.ndarray]:
        """The kept columns at rows `pos` (-1: blank values), as object / int64 arrays."""
        pos = np.asarray(pos, dtype=np.int64)
        safe = np.where(pos >= 0, pos, 0) if self.n else pos
        out = {}
        for c in KEPT + ITEM_INT_COLUMNS:
            out[c] = take(self.cols[c], safe) if self.n and len(pos) else np.empty(len(pos), dtype=object)
        if self.n and len(pos):
            prefixes, codes = self.cols["uri_prefix"]
            out["uri"] = np.array([prefixes[c] + r for c, r in zip(codes[safe].tolist(), out["uri"])], dtype=object)
        return out

    def sha256(self, pos) -> list[str]:
        """The stored content hashes at rows `pos`, read from the catalog (a range at a time)."""
        import h5py

        from .integrity import shard_stat

        pos = np.asarray(pos, dtype=np.int64)
        if not len(pos):
            return []
        lo, hi = int(pos.min()), int(pos.max()) + 1
        with h5py.File(self.catalog, "r") as f:
            ds = f["items"]["sha256"].asstr()
            if hi - lo <= 4 * len(pos):  # the rows of a chunk of the source usually lie together
                got = np.asarray(ds[lo:hi], dtype=object)[pos - lo]
            else:
                uniq, back = np.unique(pos, return_inverse=True)
                got = np.asarray(ds[uniq], dtype=object)[back]
        if self.stat is not None and shard_stat(Path(self.catalog)) != self.stat:  # the table checked in `read`, still
            raise self.damaged("it changed since its item table was checked")
        return list(got)

    def records(self, pos) -> list[dict]:
        """Whole rows (every item column) at `pos`, read from the catalog."""
        import h5py

        pos = np.asarray(pos, dtype=np.int64)
        if not len(pos):
            return []
        from .integrity import shard_stat
        from .shards import str_column

        uniq, back = np.unique(pos, return_inverse=True)
        with h5py.File(self.catalog, "r") as f:
            g = f["items"]
            cols = {c: str_column(g, c, self.n, uniq) if c in ITEM_STR_COLUMNS else g[c][uniq] for c in ITEM_COLUMNS}
        if self.stat is not None and shard_stat(Path(self.catalog)) != self.stat:  # the table checked in `read`, still
            raise self.damaged("it changed since its item table was checked")
        return [{c: cols[c][b] for c in ITEM_COLUMNS} for b in back]

    def live(self, id_blocks) -> np.ndarray:
        """A mask over the table's rows: True where an id of `id_blocks` (blocks of a set's ids) sits."""
        mask = np.zeros(self.n, dtype=bool)
        for block in id_blocks:
            p = self.positions(block)
            mask[p[p >= 0]] = True
        return mask
