"""Row text: a vector set's row-aligned string columns (integrity.ROW_COLUMNS: id, label, split,
uri, text, sha256, meta) as the catalog also keeps them for fast streaming (schema 4).

Per column, one uint8 dataset `row_text/<column>`: the rows' values, UTF-8, each NUL-terminated,
in row order; and `row_text/block_start` (blocks + 1 x columns): the byte where each ROW_BLOCK
block of rows starts. One block of one column is then exactly the bytes `integrity.column_digest`
hashes, so the catalog's `row_sha256` checks it with one sha256, over bytes read in one call.

Why not only the item table's HDF5 variable-length strings: h5py makes a Python object of each
value, about 150 ns apiece, so reading four columns of 1M rows took longer than copying 1M x 512
float16 vectors (`embed export` ran at 0.23 of a plain copy). Values never hold NUL: HDF5's own
strings cannot, and a manifest cell with one is quarantined at build time."""

from __future__ import annotations

import hashlib

import numpy as np

GROUP = "row_text"
_MAX_CHUNK = 1 << 20


class Texts:
    """One column's values for consecutive rows, as stored: `data` (uint8, every value followed by
    a NUL) and `ends` (the position of each value's NUL). Sliced and joined without a Python object
    per value; turned into values, str or an Arrow string array when used."""

    __slots__ = ("data", "ends")

    def __init__(self, data: np.ndarray, ends: np.ndarray | None = None):
        self.data = data
        self.ends = np.flatnonzero(data == 0) if ends is None else ends

    @classmethod
    def of(cls, vals) -> "Texts":
        """From values (UTF-8 bytes or str), as a catalog before schema 4 gives them."""
        from .integrity import joined_text

        return cls(np.frombuffer(joined_text(vals), dtype=np.uint8))

    @classmethod
    def blank(cls, n: int) -> "Texts":
        return cls(np.zeros(n, dtype=np.uint8), np.arange(n))

    @classmethod
    def concat(cls, parts: list["Texts"]) -> "Texts":
        if len(parts) == 1:
            return parts[0]
        at = np.cumsum([0] + [len(p.data) for p in parts[:-1]])
        return cls(np.concatenate([p.data for p in parts]), np.concatenate([p.ends + a for p, a in zip(parts, at)]))

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, sl: slice) -> "Texts":
        a, b, step = sl.indices(len(self))
        if step != 1:
            raise IndexError("Texts take contiguous slices only")
        lo = int(self.ends[a - 1]) + 1 if a > 0 else 0
        hi = int(self.ends[b - 1]) + 1 if b > a else lo
        return Texts(self.data[lo:hi], self.ends[a:b] - lo)

    def any(self) -> bool:
        """Whether some value is not empty."""
        return len(self.data) > len(self.ends)

    def values(self) -> np.ndarray:
        """UTF-8 bytes per row, in an object array (what the item table's strings read as)."""
        out = np.empty(len(self), dtype=object)
        out[:] = self.data.tobytes().split(b"\0")[:-1]
        return out

    def strings(self) -> np.ndarray:
        """str per row, in an object array (one decode of the whole block, not one per value)."""
        out = np.empty(len(self), dtype=object)
        out[:] = self.data.tobytes().decode("utf-8").split("\0")[:-1]
        return out

    def arrow(self):
        """An Arrow string array of the values, built from the bytes with their NULs left out and
        checked as UTF-8 by the cast (no Python object per value)."""
        import pyarrow as pa

        lengths = np.diff(self.ends, prepend=-1) - 1
        total = int(lengths.sum())
        kind, off_dt = (pa.binary(), np.int32) if total < 2**31 else (pa.large_binary(), np.int64)
        offsets = np.zeros(len(self) + 1, dtype=off_dt)
        np.cumsum(lengths, out=offsets[1:])
        body = self.data[self.data != 0]
        arr = pa.Array.from_buffers(kind, len(self), [None, pa.py_buffer(offsets), pa.py_buffer(body)])
        return arr.cast(pa.string() if kind == pa.binary() else pa.large_string())


class Writer:
    """Appends one set's row text block by block (`add`), then records where each block starts
    (`close`). Memory holds one block of one column."""

    def __init__(self, group, columns, n_rows: int):
        self.g = group.create_group(GROUP)
        chunk = int(min(_MAX_CHUNK, max(4096, 16 * n_rows)))
        self.ds = {c: self.g.create_dataset(c, shape=(0,), maxshape=(None,), chunks=(chunk,), dtype=np.uint8) for c in columns}
        self.columns = list(columns)
        self.starts = [[0] * len(self.columns)]

    def add(self, k: int, column: str, data: bytes) -> None:
        """Append block `k`'s bytes of `column` (blocks in order, every column of a block before the next)."""
        if k + 1 == len(self.starts):
            self.starts.append(list(self.starts[-1]))
        ci = self.columns.index(column)
        ds, at = self.ds[column], self.starts[-1][ci]
        ds.resize((at + len(data),))
        if data:
            ds[at:] = np.frombuffer(data, dtype=np.uint8)
        self.starts[-1][ci] = at + len(data)

    def close(self) -> None:
        self.g.create_dataset("block_start", data=np.asarray(self.starts, dtype=np.int64).reshape(len(self.starts), len(self.columns)))


def read_block(group, column: str, k: int, starts: np.ndarray, ci: int, rows: int, want: str) -> Texts | str:
    """Block `k` of `column` checked against its digest `want`: the Texts, or why it cannot be used."""
    lo, hi = int(starts[k, ci]), int(starts[k + 1, ci])
    if not 0 <= lo <= hi <= len(group[column]):
        return f"its {column} text in block {k} lies outside the stored bytes"
    data = group[column][lo:hi]
    if hashlib.sha256(data.data).hexdigest() != want:
        return f"its {column} column in block {k} does not match its checksum"
    t = Texts(data)
    if len(t) != rows:
        return f"its {column} column in block {k} holds {len(t)} values for {rows} rows"
    return t


def problem(group, columns, n_rows: int, n_blocks: int) -> str | None:
    """Why a set's row text group does not fit its rows (None: its shape fits; digests are checked as read)."""
    import h5py

    if group is None:
        return "it has no row text" if n_rows else None
    if any(not isinstance(group.get(c), h5py.Dataset) for c in (*columns, "block_start")):
        return "its row text lacks a column"
    if any(group[c].ndim != 1 or group[c].dtype != np.uint8 for c in columns):
        return "its row text has a column that is not bytes"
    starts = group["block_start"]
    if starts.shape != (n_blocks + 1, len(columns)):
        return "its row text block table does not have one entry per block"
    starts = starts[()]
    if (starts[0] != 0).any() or (np.diff(starts, axis=0) < 0).any():
        return "its row text block table does not start at 0 and rise"
    return None
