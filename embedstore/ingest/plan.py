"""Deciding what a build must do: which items to read and encode, which are unchanged."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..sources import Item
from ..sources.items import local_path
from ..store.schema import STATUS_OK


@dataclass(frozen=True, slots=True)  # one per item to encode
class Task:
    item: Item
    size: int
    mtime_ns: int
    known_sha: str | None  # the stored hash, when this set already has a vector for the id


class Todo:
    """A plan's tasks, kept column-wise (the items, their sizes and mtimes as int64, the stored hashes)
    and read back as `Task`s: a Task object with its two Python ints costs ~130 bytes more per item
    than these columns, which at millions of items is much of a build's peak memory. Indexing,
    `len` and iteration work as on a list of Tasks."""

    __slots__ = ("items", "_size", "_mtime", "_known")

    def __init__(self):
        from array import array

        self.items: list[Item] = []
        self._size, self._mtime = array("q"), array("q")
        self._known: list[str | None] = []

    def append(self, task: Task) -> None:
        self.items.append(task.item)
        self._size.append(task.size)
        self._mtime.append(task.mtime_ns)
        self._known.append(task.known_sha)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        return Task(self.items[i], self._size[i], self._mtime[i], self._known[i])

    def __iter__(self):
        return (self[k] for k in range(len(self)))


@dataclass
class Plan:
    todo: Todo = field(default_factory=Todo)
    metadata_only: list[tuple[Item, dict]] = field(default_factory=list)  # same file, new label/split/metadata
    unchanged: int = 0
    previously_quarantined: int = 0


def existing_items(items: dict) -> dict[str, dict]:
    """id -> stored item record, from the store's item columns."""
    cols = list(items)
    return {row[0]: dict(zip(cols, row)) for row in zip(*(items[c] for c in cols))}


def make_plan(source_items: list[Item], stored: dict[str, dict], live_ids: set[str], has_metadata: bool = True) -> Plan:
    """What to do with each item. A source without metadata columns (`has_metadata` False: a folder,
    a manifest of path/label/split/id only, such as the one a fine-tune re-embeds from) keeps the
    metadata the store holds for its items: the item table is shared by every vector set, and a
    rebuild for another encoder must not erase what a manifest brought."""
    import dataclasses

    plan = Plan()
    from .texts import text_fingerprint

    for it in source_items:
        if not has_metadata and it.meta is None and (stored.get(it.id) or {}).get("meta"):
            it = dataclasses.replace(it, meta=stored[it.id]["meta"])
        if it.text is not None or it.problem is not None:
            size, mtime = text_fingerprint(it.text, it.problem)
        else:
            try:
                st = os.stat(local_path(it.uri))
                size, mtime = st.st_size, st.st_mtime_ns
            except OSError:
                size, mtime = -1, -1
        ex = stored.get(it.id)
        same_file = ex is not None and ex["uri"] == it.uri and int(ex["size"]) == size and int(ex["mtime_ns"]) == mtime
        if same_file and ex["status"] != STATUS_OK:
            plan.previously_quarantined += 1
        elif same_file and it.id in live_ids:
            if (ex["label"] or None) == it.label and (ex["split"] or None) == it.split and (ex.get("meta") or None) == it.meta:
                plan.unchanged += 1
            else:
                plan.metadata_only.append((it, ex))
        else:
            known = ex["sha256"] if ex is not None and it.id in live_ids else None
            plan.todo.append(Task(it, size, mtime, known))
    return plan
