"""Deciding what a build must do: which items to read and encode, which are unchanged."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import SourceError
from ..sources import Item
from ..sources.items import local_path
from ..store.schema import STATUS_OK


@dataclass(frozen=True, slots=True)  # one per item to encode
class Task:
    item: Item
    size: int
    mtime_ns: int
    known_sha: str | None  # the stored hash, when this set already has a vector for the id
    relabelled: bool = False  # the store holds the id with another label, split or metadata (e.g. a moved manifest)


class Todo:
    """A plan's tasks, kept column-wise: positions in the source's item table, sizes and mtimes as
    int64, the stored hashes; read back as `Task`s. Holding a Task (or an Item) per row costs
    hundreds of bytes more per item than these columns, which at millions of items is most of a
    build's peak memory. Indexing, `len` and iteration work as on a list of Tasks."""

    __slots__ = ("table", "_pos", "_size", "_mtime", "_known", "_replaced", "_relabelled")

    def __init__(self, table=()):
        from array import array

        self.table = table  # the source's items (sources/table.ItemTable, or any list of Items)
        self._pos, self._size, self._mtime = array("q"), array("q"), array("q")
        self._known: list[str | None] = []
        self._replaced: dict[int, Item] = {}  # task -> the item the plan changed (kept the stored metadata)
        self._relabelled: set[int] = set()  # tasks whose stored label, split or metadata differ (few: a set)

    def add(self, pos: int, size: int, mtime_ns: int, known_sha: str | None, item: Item | None = None,
            relabelled: bool = False) -> None:
        """Task for the table's item `pos`; `item` when the plan changed it."""
        if item is not None:
            self._replaced[len(self._pos)] = item
        if relabelled:
            self._relabelled.add(len(self._pos))
        self._pos.append(pos)
        self._size.append(size)
        self._mtime.append(mtime_ns)
        self._known.append(known_sha)

    def set_known(self, task: int, known_sha: str | None) -> None:
        self._known[task] = known_sha

    def __len__(self) -> int:
        return len(self._pos)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        item = self._replaced.get(i)
        if item is None:
            item = self.table[self._pos[i]]
        return Task(item, self._size[i], self._mtime[i], self._known[i], i in self._relabelled)

    def __iter__(self):
        return (self[k] for k in range(len(self)))


@dataclass
class Plan:
    todo: Todo = field(default_factory=Todo)
    metadata_only: list[tuple[Item, dict]] = field(default_factory=list)  # same file, new label/split/metadata
    unchanged: int = 0
    previously_quarantined: int = 0
    new_only: bool = True  # every item to encode is new to the store (its catalog can be appended to)
    gone: int = 0  # stored items from files under a source folder that no longer exist there
    gone_example: str = ""
    moved: int = 0  # items whose file is now at another path (same id): their paths are updated
    unlisted: int = 0  # stored items the source does not list: a manifest's rows removed (or another source's); a folder's files it skips now
    unlisted_example: str = ""
    meta_kept: int = 0  # a source without metadata columns: stored items whose metadata it keeps
    # sha256 -> id of a stored item with a vector whose file is gone: a new id with those bytes (a file
    # moved to another label's folder, or renamed) has that vector copied instead of encoded (loader.load_image)
    reuse: dict = field(default_factory=dict)


# Gone items whose hashes are kept for reuse, at most (~200 bytes each: 50 MB at the cap); a folder
# reorganised beyond that encodes the rest again.
REUSE_MAX = 1 << 18


CHUNK = 16384  # source items compared with the store at a time


def _collision(it: Item, stored_uri: str, row: int) -> list[tuple[str, str, str, int]]:
    """[(id, stored file, new file, stored row)] when the store's file for this id still exists beside the new one."""
    old, new = local_path(stored_uri), local_path(it.uri)
    if "://" in old or "://" in new or not os.path.exists(old) or os.path.realpath(old) == os.path.realpath(new):
        return []
    return [(it.id, old, new, row)]


def _file_sha256(path: str) -> str | None:
    import hashlib

    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None  # unreadable: the build quarantines it
    return h.hexdigest()


def _gone(stored, rows: np.ndarray, folder: str, old_roots=(), live: np.ndarray | None = None,
          reuse: dict | None = None, source_uris=()) -> tuple[int, str, int, str]:
    """(how many of the stored `rows` came from files under `folder`, or under `old_roots` (where a
    moved folder's items were), that no longer exist, an id; how many came from files under `folder`
    that still exist but the listing no longer reads (it skips them now: a symbolic link to a file
    it holds, a loose file beside split folders; not files it reads under another id, `source_uris`), an id). With `reuse`, the gone items that have
    a vector (`live`) are added to it as sha256 -> id, up to REUSE_MAX."""
    root = tuple({os.path.join(os.path.realpath(folder), "")} | {os.path.join(r, "") for r in old_roots})
    here = os.path.join(os.path.realpath(folder), "")
    n, example = 0, ""
    unread: dict[str, str] = {}  # path -> id of stored items whose file exists but whose id the source does not list
    for a in range(0, len(rows), CHUNK):
        part = rows[a : a + CHUNK]
        got = stored.gather(part)
        vectored: list[tuple[int, str]] = []
        for p, i, uri, status in zip(part.tolist(), got["id"], got["uri"], got["status"]):
            path = local_path(str(uri))
            if status == STATUS_OK and path.startswith(root) and not os.path.exists(path):
                n += 1
                example = example or str(i)
                if reuse is not None and live is not None and live[p]:
                    vectored.append((p, str(i)))
            elif status == STATUS_OK and path.startswith(here):
                unread.setdefault(path, str(i))
        if vectored and len(reuse) < REUSE_MAX:
            vectored = vectored[: REUSE_MAX - len(reuse)]
            reuse.update(zip(stored.sha256([p for p, _ in vectored]), (i for _, i in vectored)))
    if unread:  # the same files read under new ids (the store was built from another root) are read, not skipped
        for uri in source_uris:
            unread.pop(local_path(str(uri)), None)
    return n, example, len(unread), next(iter(unread.values()), "")


def check_collisions(collisions: list, stored) -> None:
    """Refuse the build when a new file would replace a stored item of other content whose file still
    exists. A file with the stored bytes (a second copy of the same folder) is the same item."""
    if collisions:
        known = stored.sha256([c[3] for c in collisions])
        collisions = [c for c, sha in zip(collisions, known) if _file_sha256(c[2]) != sha]
    if collisions:
        i, old, new, _ = collisions[0]
        more = f" ({len(collisions) - 1} more id(s) like it)" if len(collisions) > 1 else ""
        raise SourceError(f"item id {i!r} is already in the store from another file that still exists ({old}; this "
                          f"source has {new}){more}: "
                          "building would replace the stored item. Ids are paths relative to the source folder: build "
                          "this folder into its own --store, or list both in one manifest (CSV with path and id columns) "
                          "whose ids keep them apart")


def make_plan(source_items, stored=None, live: np.ndarray | None = None, has_metadata: bool = True,
              folder: str | None = None, retry_quarantined: bool = False, manifest: bool = False,
              rehash: bool = False, excluded=None) -> Plan:
    """What to do with each item. `excluded`: ids --exclude left out of the source (stored ones stay). `stored`: the store's item table (store/stored.StoredItems; None
    for an empty store), `live`: a mask over its rows, True where the vector set has the item's
    vector. A source without metadata columns (`has_metadata` False: a folder, a manifest of
    path/label/split/id only, such as the one a fine-tune re-embeds from) keeps the metadata the
    store holds for its items: the item table is shared by every vector set, and a rebuild for
    another encoder must not erase what a manifest brought.

    Items are compared a chunk at a time, with the stored columns of that chunk's rows only.

    An item whose id the store holds from another file that still exists, with other content (a
    second folder with the same relative paths, built into the same store), would replace that
    item: the build is refused before anything is written (`check_collisions`). A file that moved (its old path is gone) is
    the same item: its hash decides whether it is encoded again.

    `folder` (a folder source): stored items from files under it that are gone (deleted, or moved
    to another label's folder) are counted in `plan.gone`; they stay in the store. When the source
    also has new ids, the hashes of the gone items with vectors go to `plan.reuse`: a new file with
    the same bytes is the moved file, and gets its vector without being decoded or encoded.

    `manifest` (a manifest source): stored items it does not list are counted in `plan.unlisted`.

    A file an earlier build quarantined is left as it is until it changes, or with `retry_quarantined`
    (say after raising EMBEDSTORE_MAX_IMAGE_PIXELS, or installing a decoder) read again."""
    import dataclasses
    from itertools import islice

    from .texts import text_fingerprint

    plan = Plan(Todo(source_items))
    metadata_rows: list[int] = []
    known: list[tuple[int, int]] = []  # (task, stored row) of this chunk's live items to encode again
    collisions: list[tuple[str, str, str]] = []  # (id, stored file, new file): two existing files, one id
    seen = np.zeros(stored.n, dtype=bool) if stored is not None and (folder or manifest) else None  # stored rows the source lists
    old_roots: set[str] = set()
    new_ids = 0  # tasks for ids the store does not hold
    items = iter(source_items)
    pos0 = 0
    while chunk := list(islice(items, CHUNK)):
        at = stored.positions([it.id for it in chunk]) if stored is not None else np.full(len(chunk), -1)
        if seen is not None:
            seen[at[at >= 0]] = True
        ex = stored.gather(at) if stored is not None else None
        for j, it in enumerate(chunk):
            p = int(at[j])
            replaced = None
            if p >= 0 and not has_metadata and it.meta is None and ex["meta"][j]:
                it = replaced = dataclasses.replace(it, meta=ex["meta"][j])
                plan.meta_kept += 1
            if it.text is not None or it.problem is not None:
                size, mtime = text_fingerprint(it.text, it.problem)
            else:
                try:
                    st = os.stat(local_path(it.uri))
                    size, mtime = st.st_size, st.st_mtime_ns
                except OSError:
                    size, mtime = -1, -1
            is_live = p >= 0 and live is not None and bool(live[p])
            # the fast path trusts path + size + mtime (as make and rsync do); `rehash` reads every file's bytes again
            same_file = (p >= 0 and ex["uri"][j] == it.uri and int(ex["size"][j]) == size and int(ex["mtime_ns"][j]) == mtime
                         and not (rehash and it.text is None))
            if p >= 0 and ex["uri"][j] != it.uri and it.text is None:
                collisions.extend(_collision(it, str(ex["uri"][j]), p))
                plan.moved += 1
                old = local_path(str(ex["uri"][j]))
                rel = it.id.replace("/", os.sep)
                if folder and old.endswith(os.sep + rel):  # where the folder was: its deleted files still count as gone
                    old_roots.add(old[: -len(rel) - 1])
            same_rows = p >= 0 and ((ex["label"][j] or None) == it.label and (ex["split"][j] or None) == it.split
                                    and (ex["meta"][j] or None) == it.meta)
            if same_file and ex["status"][j] != STATUS_OK and not retry_quarantined:
                plan.previously_quarantined += 1
            elif same_file and is_live:
                if same_rows:
                    plan.unchanged += 1
                else:
                    plan.metadata_only.append((it, None))
                    metadata_rows.append(p)
            else:
                if is_live:  # its stored hash, read below: an unchanged file is then not encoded again
                    known.append((len(plan.todo), p))
                if p >= 0:
                    plan.new_only = False
                else:
                    new_ids += 1
                # an unchanged file (its hash) with other labels or metadata is counted as updated, not unchanged
                plan.todo.add(pos0 + j, size, mtime, None, replaced, relabelled=p >= 0 and not same_rows)
        if known:
            for (task, _), sha in zip(known, stored.sha256([p for _, p in known])):
                plan.todo.set_known(task, sha)
            known.clear()
        pos0 += len(chunk)
    check_collisions(collisions, stored)
    if excluded and seen is not None:  # left out by --exclude: kept in the store as they are, not unlisted nor gone
        pos = stored.positions(excluded)
        seen[pos[pos >= 0]] = True
    if manifest and seen is not None and not seen.all():
        plan.unlisted = int((~seen).sum())
        plan.unlisted_example = str(stored.gather(np.flatnonzero(~seen)[:1])["id"][0])
    elif seen is not None and not seen.all():
        plan.gone, plan.gone_example, plan.unlisted, plan.unlisted_example = _gone(
            stored, np.flatnonzero(~seen), folder, sorted(old_roots)[:16], live, plan.reuse if new_ids and live is not None else None,
            source_items.column("uri") if hasattr(source_items, "column") else (it.uri for it in source_items))
    if metadata_rows:  # whole stored rows (text included) for the items whose labels or metadata changed
        records = stored.records(metadata_rows)
        plan.metadata_only = [(it, rec) for (it, _), rec in zip(plan.metadata_only, records)]
    return plan
