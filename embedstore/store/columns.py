"""A catalog column in memory: a numpy array (or list) of values, or, for string columns the refresh
keeps for every shard, an Arrow array. Arrow holds a string in its UTF-8 bytes plus a 4-byte
offset; a Python str costs 49 bytes more, and at millions of rows the catalog refresh held every
item's strings that way. These helpers give every consumer Python values, a slice at a time."""

from __future__ import annotations

import numpy as np


def is_arrow(col) -> bool:
    return type(col).__module__.startswith("pyarrow")


# Columns the catalog refresh does not keep in memory: it reads them again from each shard's file,
# one shard at a time, as the catalog is written (~2 ms a shard). Kept, these strings were most of
# what a refresh holds per row (uri, text, meta, sha256: ~160 B a row of ~250), and a build's peak
# memory grew with the store by them. The others decide the layout (id, status) or are small.
LAZY_COLUMNS = ("uri", "sha256", "text", "meta")


class ShardColumn:
    """One string column of one checked shard, read from its file when used and not kept. The
    shard must still have the (size, mtime) it had when it was checked: if it changed, reading
    refuses (DamagedStoreError) rather than use bytes nobody checked."""

    __slots__ = ("path", "name", "n", "stat")

    def __init__(self, path, name: str, n: int, stat: tuple[int, int]):
        self.path, self.name, self.n, self.stat = path, name, n, stat

    def __len__(self) -> int:
        return self.n

    def load(self):
        import h5py
        import pyarrow as pa

        from ..errors import DamagedStoreError
        from .integrity import shard_stat
        from .shards import str_column

        changed = DamagedStoreError(f"shard {self.path.name} changed after it was checked; run the command again "
                                    "(it is checked again in full)")
        if shard_stat(self.path) != self.stat:
            raise changed
        with h5py.File(self.path, "r") as f:
            g = f["items"]
            vals = str_column(g, self.name, self.n)
        if shard_stat(self.path) != self.stat:  # and not while it was read
            raise changed
        if len(vals) != self.n:
            raise DamagedStoreError(f"shard {self.path.name} holds {len(vals)} {self.name} values for {self.n} rows")
        return pa.array(np.asarray(vals, dtype=object), pa.string(), memory_pool=pa.system_memory_pool())


class LazyChunks:
    """Shards' `ShardColumn`s as one column: the catalog reads it in order, so one loaded shard is kept."""

    __slots__ = ("parts", "bounds", "_last")

    def __init__(self, parts):
        self.parts = list(parts)
        self.bounds = np.cumsum([0] + [len(p) for p in self.parts])
        self._last = None  # (part index, its Arrow array)

    def __len__(self) -> int:
        return int(self.bounds[-1])

    def chunk(self, i: int):
        last = self._last
        if last is not None and last[0] == i:
            return last[1]
        part = self.parts[i]
        arr = part.load() if isinstance(part, ShardColumn) else arrow(part)
        self._last = (i, arr)
        return arr


def _lazy(col) -> bool:
    return isinstance(col, (ShardColumn, LazyChunks))


def materialize(col):
    """A column whole: lazy ones read in (one shard's, or an Arrow chunked array of all)."""
    import pyarrow as pa

    if isinstance(col, ShardColumn):
        return col.load()
    if isinstance(col, LazyChunks):
        return pa.chunked_array([col.chunk(i) for i in range(len(col.parts))], pa.string())
    return col


def _chunks_of(col):
    """(bounds, chunk(i)) of a chunked column: Arrow's, or a lazy one."""
    if isinstance(col, ShardColumn):
        col = LazyChunks([col])
    if isinstance(col, LazyChunks):
        return col.bounds, col.chunk
    return np.cumsum([0] + [len(c) for c in col.chunks]), lambda i: col.chunks[i]


def objects(col, a: int = 0, b: int | None = None) -> np.ndarray:
    """Values [a, b) of `col` as an object array (numpy columns: a view where they are object arrays)."""
    b = len(col) if b is None else b
    if _lazy(col):
        bounds, chunk = _chunks_of(col)
        first = int(np.searchsorted(bounds, a, side="right")) - 1
        parts = []
        i = max(first, 0)
        while i < len(bounds) - 1 and bounds[i] < b:
            lo, hi = max(a, bounds[i]) - bounds[i], min(b, bounds[i + 1]) - bounds[i]
            if hi > lo:
                parts.append(objects(chunk(i), int(lo), int(hi)))
            i += 1
        return np.concatenate(parts) if parts else np.empty(0, dtype=object)
    if is_arrow(col):
        part = col.slice(a, max(0, b - a))
        out = part.to_numpy() if hasattr(part, "chunks") else part.to_numpy(zero_copy_only=False)
        return np.asarray(out, dtype=object)
    return np.asarray(col[a:b], dtype=object)


def take(col, positions: np.ndarray) -> np.ndarray:
    """Values at `positions` as an object array."""
    if is_arrow(col):
        import pyarrow as pa
        import pyarrow.compute as pc

    if is_arrow(col) or _lazy(col):
        import pyarrow as pa
        import pyarrow.compute as pc

        positions = np.asarray(positions, dtype=np.int64).reshape(-1)
        pool = pa.system_memory_pool()
        if is_arrow(col) and not hasattr(col, "chunks"):
            return objects(pc.take(col, pa.array(positions), memory_pool=pool))
        # chunk by chunk: Arrow's take on a chunked string column first concatenates every chunk
        # (a copy of the whole column, on a pool that keeps it: +72 MB peak RSS at 800k rows)
        bounds, chunk = _chunks_of(col)
        which = np.searchsorted(bounds, positions, side="right") - 1
        out = np.empty(len(positions), dtype=object)
        for c in np.unique(which):
            sel = np.flatnonzero(which == c)
            out[sel] = objects(pc.take(chunk(int(c)), pa.array(positions[sel] - bounds[c]), memory_pool=pool))
        return out
    return np.asarray(col, dtype=object)[positions] if isinstance(col, list) else col[positions]


def values(col, step: int = 1 << 16):
    """Every value in order, `step` at a time converted (flat memory for an Arrow column)."""
    for a in range(0, len(col), step):
        yield from objects(col, a, a + step)


def arrow(vals):
    """String values as a compact Arrow array (on the system allocator: Arrow's default pool keeps
    what it frees, ~115 MB more peak RSS at 1M rows in the catalog refresh)."""
    import pyarrow as pa

    if is_arrow(vals):
        return vals
    if _lazy(vals):
        return materialize(vals)
    return pa.array(np.asarray(vals, dtype=object), pa.string(), memory_pool=pa.system_memory_pool())


def has_repeats(col) -> bool:
    """Whether a string column holds some value twice. By sorting: Arrow's hash-based
    count_distinct peaked at ~170 bytes a value (336 MB more RSS for 2M ids), a sort at ~25."""
    import pyarrow as pa
    import pyarrow.compute as pc

    pool = pa.system_memory_pool()
    col = arrow(col)
    if hasattr(col, "chunks"):
        col = col.combine_chunks(memory_pool=pool)
    if len(col) < 2:
        return False
    srt = pc.take(col, pc.array_sort_indices(col, memory_pool=pool), memory_pool=pool)
    return bool(pc.any(pc.equal(srt.slice(1), srt.slice(0, len(srt) - 1), memory_pool=pool)).as_py())


def prefix_codes(uris, prefixes: list[str], code_of: dict[str, int]) -> tuple[np.ndarray, list[str]]:
    """Each uri as (the code of its prefix, the rest), the prefix being its folder (up to the last
    '/') or its file and '#' (a text row's uri): paths repeat their folder on every row, and kept
    this way it is stored once. `prefixes` / `code_of` are the running table, extended here."""
    codes, rests = np.empty(len(uris), dtype=np.int32), []
    for k, u in enumerate(uris):
        cut = max(u.rfind("#"), u.rfind("/")) + 1
        code = code_of.get(u[:cut])
        if code is None:
            code = code_of[u[:cut]] = len(prefixes)
            prefixes.append(u[:cut])
        codes[k] = code
        rests.append(u[cut:])
    return codes, rests
