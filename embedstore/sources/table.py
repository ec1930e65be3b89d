"""A source's items kept column-wise.

A build holds its source's listing from the plan to the end of the encoding loop. As a list of
`Item`s that costs ~345 bytes a row for texts (the object, its id, uri and text as Python
strings) and is most of what grows with rows in a build's peak memory. Here the items live in
chunks of Arrow string columns (their UTF-8 bytes plus a 4-byte offset), with each uri split into
a shared prefix (its folder, or its file and '#') and the rest: about 60 bytes a text row. Items
come back as `Item`s one chunk at a time, on iteration or indexing, and are not kept.

Arrow is used for the packing; what it lacks is a cheap row-at-a-time view, hence the one-chunk
cache: indexing in order (the loader, the plan's tasks) materialises each chunk once.
"""

from __future__ import annotations

import numpy as np

from ..store.columns import prefix_codes
from .items import Item

CHUNK = 16384  # rows per frozen chunk; one materialised chunk of Items is ~5 MB
_FIELDS = ("id", "label", "split", "text", "problem", "meta")  # Item's fields besides uri


class ItemTable:
    """An append-only sequence of `Item`s, stored column-wise. `len`, indexing (ints and slices),
    iteration and `append` work as on a list of Items; `column(name)` reads one field cheaply."""

    __slots__ = ("_chunks", "_buf", "_prefixes", "_prefix_code", "_n", "_cache")

    def __init__(self, items=()):
        self._chunks: list[dict] = []
        self._buf: list[Item] = []
        self._prefixes: list[str] = []
        self._prefix_code: dict[str, int] = {}
        self._n = 0
        self._cache: tuple[int, list[Item]] | None = None
        for it in items:
            self.append(it)

    def append(self, item: Item) -> None:
        self._buf.append(item)
        self._n += 1
        if len(self._buf) == CHUNK:
            self._freeze()

    def _freeze(self) -> None:
        import pyarrow as pa

        pool = pa.system_memory_pool()  # Arrow's default pool keeps what it frees
        buf, self._buf = self._buf, []
        chunk = {}
        for name in _FIELDS:
            values = [getattr(it, name) for it in buf]
            chunk[name] = None if all(v is None for v in values) else pa.array(values, type=pa.string(), memory_pool=pool)
        codes, rests = prefix_codes([it.uri for it in buf], self._prefixes, self._prefix_code)
        chunk["uri"] = (codes, pa.array(rests, type=pa.string(), memory_pool=pool))
        self._chunks.append(chunk)

    def __len__(self) -> int:
        return self._n

    def _rows(self, c: int) -> list[Item]:
        if c == len(self._chunks):
            return self._buf
        cached = self._cache
        if cached is not None and cached[0] == c:
            return cached[1]
        chunk = self._chunks[c]
        n = len(chunk["uri"][0])
        cols = {name: [None] * n if chunk[name] is None else chunk[name].to_pylist() for name in _FIELDS}
        p = self._prefixes
        uris = [p[code] + rest for code, rest in zip(chunk["uri"][0].tolist(), chunk["uri"][1].to_pylist())]
        rows = list(map(Item, cols["id"], uris, cols["label"], cols["split"], cols["text"], cols["problem"], cols["meta"]))
        self._cache = (c, rows)  # one tuple assignment: a reader in another thread sees the old or the new pair
        return rows

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(self._n))]
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError("item index out of range")
        c, j = divmod(i, CHUNK)
        return self._rows(c)[j]

    def __iter__(self):
        for c in range(len(self._chunks)):
            yield from self._rows(c)
        yield from list(self._buf)

    def column(self, name: str):
        """One field's values in row order, without making Items (uri included)."""
        for chunk in self._chunks:
            if name == "uri":
                codes, rests = chunk["uri"]
                yield from (self._prefixes[c] + r for c, r in zip(codes.tolist(), rests.to_pylist()))
            elif chunk[name] is None:
                yield from [None] * len(chunk["uri"][0])
            else:
                yield from chunk[name].to_pylist()
        yield from [getattr(it, name) for it in self._buf]

    def where(self, keep) -> "ItemTable":
        """The items for which `keep(item)` is true, as a new table."""
        return ItemTable(it for it in self if keep(it))

    def repeated_id(self) -> tuple[str, str, str] | None:
        """(id, first uri, second uri) for an id that occurs twice, else None. Checked in Arrow:
        a set of millions of Python ids would cost more than the table itself."""
        import pyarrow as pa

        from ..store.columns import has_repeats

        tail = pa.array([it.id for it in self._buf], type=pa.string(), memory_pool=pa.system_memory_pool())
        if not has_repeats(pa.chunked_array([c["id"] for c in self._chunks] + [tail], type=pa.string())):
            return None
        seen: dict[str, str] = {}
        for item_id, uri in zip(self.column("id"), self.column("uri")):
            if item_id in seen:
                return item_id, seen[item_id], uri
            seen[item_id] = uri
        return None
