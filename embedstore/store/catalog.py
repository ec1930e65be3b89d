"""The catalog: the store's main HDF5 file, derived from the shards and replaced atomically.

Items are merged across shards (the latest commit of an id wins). Each vector set's `vectors`
is an HDF5 virtual dataset over its shards' rows, holding only live rows: rows whose content
hash matches the item's current hash. A missing shard reads as NaN, never as silent zeros.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_h5, check_free_space
from .schema import FORMAT, ITEM_COLUMNS, ITEM_INT_COLUMNS, ITEM_STR_COLUMNS, SCHEMA_VERSION, STATUS_OK
from .shards import ShardMeta


@dataclass
class SetLayout:
    name: str
    attrs: dict
    dim: int
    dtype: str
    runs: list[tuple[str, int, int, int]] = field(default_factory=list)  # (shard, n_in_shard, start, stop)
    ids: list[str] = field(default_factory=list)
    item_rows: list[int] | np.ndarray = field(default_factory=list)  # each row's position in the item table
    stale: int = 0  # rows superseded by a changed file


@dataclass
class Layout:
    items: dict[str, list | np.ndarray]  # columns (lists, or arrays when built by _layout_unique)
    sets: dict[str, SetLayout]
    shards: list[str]  # "<set>/<file>" in commit order


def compute_layout(shards: list[tuple[str, ShardMeta]], set_attrs: dict[str, dict]) -> Layout:
    """Merge shard metadata (in commit order) into the item table and each set's live rows."""
    order = sorted(shards, key=lambda s: s[1].name)
    return _layout_unique(order, set_attrs) or _layout_general(order, set_attrs)


def _layout_unique(order: list[tuple[str, ShardMeta]], set_attrs: dict[str, dict]) -> Layout | None:
    """`compute_layout` when no id is committed twice (a first build, or builds that only add): the
    same Layout by array operations, with no Python object per row (at millions of rows the general
    merge below costs seconds and hundreds of MB a refresh). None when some id repeats."""
    if not order:
        return None
    import pyarrow as pa
    import pyarrow.compute as pc

    from .columns import LazyChunks, ShardColumn, arrow, has_repeats, take

    # Arrow's default pool (jemalloc) keeps what these transients free: at 1M rows ~115 MB more peak RSS
    pool = pa.system_memory_pool()

    def joined(cols):  # one column over every shard: string columns as one Arrow chunked array (no copy)
        if any(isinstance(c, ShardColumn) for c in cols):
            return LazyChunks(cols)  # read shard by shard as the catalog is written
        return pa.chunked_array([arrow(c) for c in cols], pa.string())

    items = {c: joined([m.items[c] for _, m in order]) if c in ITEM_STR_COLUMNS
             else np.concatenate([np.asarray(m.items[c], dtype=np.int64) for _, m in order]) for c in ITEM_COLUMNS}
    id_set = items["id"].combine_chunks(memory_pool=pool)
    if len(id_set) == 0:  # vectors but no items at all: the general merge says what that means
        return None
    starts = np.cumsum([0] + [len(m.items["id"]) for _, m in order])  # each shard's first item-table row
    if has_repeats(id_set):  # (a Python set of millions costs ~60 B an id)
        return None
    sets: dict[str, SetLayout] = {}
    members: dict[str, list[int]] = {}
    for i, (set_name, _meta) in enumerate(order):
        a = set_attrs[set_name]
        sets.setdefault(set_name, SetLayout(set_name, a, int(a["dim"]), str(a["dtype"])))
        members.setdefault(set_name, []).append(i)
    for set_name, shard_idx in members.items():
        sl = sets[set_name]
        if not all(order[i][1].vector_ids is order[i][1].items["id"] for i in shard_idx):
            # some shard's vectors are not its items in order: a vector id committed twice takes the general path
            # (when every shard's are, they are ids of the item table, which has no repeats)
            if has_repeats(joined([order[i][1].vector_ids for i in shard_idx])):
                return None
        ids_parts, rows_parts = [], []
        for i in shard_idx:  # shard by shard: memory holds one shard's comparisons, not the set's
            m = order[i][1]
            if m.vector_ids is m.items["id"]:  # shards._shared: vector j is this shard's item j
                pos = starts[i] + np.arange(len(m.vector_ids), dtype=np.int64)
                ok = _equal(m.items["status"], STATUS_OK)
                same = True if m.vector_sha256 is m.items["sha256"] else _equal(m.vector_sha256, m.items["sha256"])
            else:
                pos = pc.index_in(arrow(m.vector_ids), value_set=id_set, memory_pool=pool).fill_null(-1).to_numpy()
                pos = pos.astype(np.int64)
                safe = pa.array(np.where(pos >= 0, pos, 0))
                ok = _equal(items["status"].take(safe), STATUS_OK)
                same = _equal(take(items["sha256"], np.where(pos >= 0, pos, 0)), arrow(m.vector_sha256))
            live = (pos >= 0) & ok & same
            sl.stale += int((~live).sum())
            jj = np.flatnonzero(live)
            if len(jj):
                cut = np.flatnonzero(np.diff(jj) != 1) + 1
                for a0, b0 in zip(np.r_[0, cut], np.r_[cut, len(jj)]):
                    sl.runs.append((f"{set_name}/{m.name}", m.n_vectors, int(jj[a0]), int(jj[b0 - 1]) + 1))
                ids_parts.append(pc.filter(arrow(m.vector_ids), pa.array(live), memory_pool=pool))
                rows_parts.append(pos[live])
        sl.ids = pa.concat_arrays(ids_parts, memory_pool=pool) if ids_parts else []
        sl.item_rows = np.concatenate(rows_parts) if rows_parts else np.zeros(0, dtype=np.int64)
    return Layout(items=items, sets=sets, shards=[f"{set_name}/{meta.name}" for set_name, meta in order])


def _indexable(col):
    """A column that row tables gather from block by block: a list becomes an object array once
    (gathering from a list would convert all of it for every block)."""
    return np.asarray(col, dtype=object) if isinstance(col, list) else col


def _equal(col, other) -> np.ndarray:
    """Element-wise `col == other` (a value, or a column of the same length) as a numpy bool array."""
    from .columns import is_arrow, materialize

    col, other = materialize(col), materialize(other)
    if is_arrow(col) or is_arrow(other):
        import pyarrow as pa
        import pyarrow.compute as pc

        out = pc.equal(col, other, memory_pool=pa.system_memory_pool())
        return out.to_numpy() if hasattr(out, "chunks") else out.to_numpy(zero_copy_only=False)
    return np.asarray(np.asarray(col, dtype=object) == other, dtype=bool)


def _layout_general(order: list[tuple[str, ShardMeta]], set_attrs: dict[str, dict]) -> Layout:
    """`compute_layout` for any shards: an id committed again (a changed file re-embedded, a
    relabelled item) takes its newest row, keeping the position of its first."""
    from .columns import objects

    latest: dict[str, tuple] = {}
    for _set, meta in order:
        cols = [objects(meta.items[c]) if c in ITEM_STR_COLUMNS else meta.items[c] for c in ITEM_COLUMNS]
        for row in zip(*cols):
            latest[row[0]] = row  # dict keeps first-insertion position, value is the newest
    items = {c: [] for c in ITEM_COLUMNS}
    for row in latest.values():
        for c, v in zip(ITEM_COLUMNS, row):
            items[c].append(v)
    sha_col, status_col = ITEM_COLUMNS.index("sha256"), ITEM_COLUMNS.index("status")
    item_pos = dict(zip(latest, range(len(latest))))

    sets: dict[str, SetLayout] = {}
    newest_row: dict[str, dict[str, tuple[int, int]]] = {}
    shard_list = []
    for i, (set_name, meta) in enumerate(order):
        shard_list.append(f"{set_name}/{meta.name}")
        a = set_attrs[set_name]
        sl = sets.setdefault(set_name, SetLayout(set_name, a, int(a["dim"]), str(a["dtype"])))
        rows = newest_row.setdefault(set_name, {})
        for j, vid in enumerate(objects(meta.vector_ids)):
            if vid in rows:
                sl.stale += 1
            rows[vid] = (i, j)
    vshas = [objects(meta.vector_sha256) for _set, meta in order]
    for set_name, rows in newest_row.items():
        sl = sets[set_name]
        live = []
        for vid, (i, j) in rows.items():
            item = latest.get(vid)
            if item is None or item[status_col] != STATUS_OK or item[sha_col] != vshas[i][j]:
                sl.stale += 1
                continue
            live.append((i, j, vid))
        live.sort()
        for i, j, vid in live:
            shard = f"{set_name}/{order[i][1].name}"
            if sl.runs and sl.runs[-1][0] == shard and sl.runs[-1][3] == j:
                s, n, a0, _ = sl.runs[-1]
                sl.runs[-1] = (s, n, a0, j + 1)
            else:
                sl.runs.append((shard, order[i][1].n_vectors, j, j + 1))
            sl.ids.append(vid)
            sl.item_rows.append(item_pos[vid])
    return Layout(items=items, sets=sets, shards=shard_list)


def write_catalog(path: Path, shard_root_rel: str, layout: Layout, index_meta: dict[str, dict], created: str | None,
                  shard_stats: dict[str, tuple[int, int]] | None = None) -> None:
    """Write the catalog to a temp file and rename it over the old one (atomic.atomic_h5).

    `shard_stats` ("<set>/<file>" -> (size, mtime_ns)) of shards whose checksums were checked: an
    opener whose shards still have them trusts them (fast path); any other shard is checked in full.
    Each set also gets `item_row` (row -> item table position, so readers stream rows with their
    labels without loading the item table), `row_sha256` (checksums per ROW_BLOCK rows of each of
    its row-aligned columns) and `row_map_sha256` (its virtual dataset's row-to-shard map)."""
    from . import rowtext
    from .integrity import ROW_BLOCK, ROW_COLUMNS, row_map_digest

    check_free_space(path.parent, 2 * _catalog_bytes(layout) + (64 << 10))
    with atomic_h5(path) as f:
        write_file_attrs(f, created, shard_root_rel)
        g = f.create_group("items")
        n_items = len(layout.items["id"])
        str_cols = {c: _indexable(layout.items[c]) for c in ITEM_STR_COLUMNS}  # object arrays or Arrow (store/columns.py)
        g.attrs["items_sha256"] = write_items(g, layout.items, str_cols)  # Store.items() refuses a table that differs
        g.attrs["count"] = n_items
        g.attrs["ok"] = ok_count(str_cols["status"])
        write_shard_list(f, layout.shards, [(shard_stats or {}).get(k, (-1, -1)) for k in layout.shards])
        vg = f.create_group("vectors")
        for name, sl in layout.sets.items():
            sg = vg.create_group(name)
            for k, v in sl.attrs.items():
                sg.attrs[k] = v
            n = len(sl.ids)
            sg.attrs["count"] = n
            sg.attrs["stale_rows"] = sl.stale
            for k, v in index_attrs(index_meta.get(name)).items():
                sg.attrs[k] = v
            text = rowtext.Writer(sg, ROW_COLUMNS, len(sl.ids))
            ids, at, digests, pieces = row_tables(sl, str_cols, shard_root_rel, sink=text.add)
            text.close()
            _strings(sg, "ids", ids)
            sg.create_dataset("item_row", data=at)
            sg.attrs["row_block"] = ROW_BLOCK
            sg.create_dataset("row_sha256", data=digests)
            sg.attrs["row_map_sha256"] = row_map_digest(pieces)
            write_vectors(sg, n, sl.dim, sl.dtype, [(*p, run[1]) for p, run in zip(pieces, sl.runs)])


def index_attrs(meta: dict | None) -> dict:
    """A set's index metadata (store/index.py) as the catalog records it: `index_<key>` attributes."""
    return {f"index_{k}": v if not isinstance(v, (dict, list)) else json.dumps(v) for k, v in (meta or {}).items()}


def write_file_attrs(f, created: str | None, shard_root_rel: str) -> None:
    """A catalog's own attributes (format, schema, created, updated, shard_dir, version)."""
    from .. import __version__

    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    f.attrs["format"] = FORMAT
    f.attrs["embedstore_schema"] = SCHEMA_VERSION
    f.attrs["created"] = created or now
    f.attrs["updated"] = now
    f.attrs["shard_dir"] = shard_root_rel
    f.attrs["embedstore_version"] = __version__


def write_shard_list(f, shards: list[str], stats: list[tuple[int, int]]) -> None:
    """The shards a catalog was made from, with the (size, mtime_ns) each was checked at ((-1, -1): none)."""
    import h5py

    f.create_dataset("shards", data=np.array(shards, dtype=object), dtype=h5py.string_dtype("utf-8"))
    f.create_dataset("shard_size", data=np.asarray([a for a, _ in stats], dtype=np.int64).reshape(len(stats)))
    f.create_dataset("shard_mtime_ns", data=np.asarray([b for _, b in stats], dtype=np.int64).reshape(len(stats)))


def write_vectors(sg, n: int, dim: int, dtype: str, pieces) -> None:
    """A set's `vectors`: a virtual dataset of `n` rows over its shards, from (first row, end row,
    shard file, dataset, shard first row, shard end row, shard rows) pieces; a missing shard reads as NaN."""
    import h5py

    if n == 0:
        sg.create_dataset("vectors", shape=(0, dim), dtype=dtype)
        return
    vl = h5py.VirtualLayout(shape=(n, dim), dtype=dtype)
    for dest, end, shard_file, dset, start, stop, shard_rows in pieces:
        vl[dest:end] = h5py.VirtualSource(shard_file, dset, shape=(shard_rows, dim))[start:stop]
    sg.create_virtual_dataset("vectors", vl, fillvalue=np.nan)


def ok_count(status) -> int:
    """How many items of a status column are ok (counted 64k values at a time)."""
    from .columns import objects

    return sum(int((objects(status, a, a + 65536) == STATUS_OK).sum()) for a in range(0, len(status), 65536))


def _catalog_bytes(layout: Layout) -> int:
    """About what the catalog will take on disk: each string column at the mean UTF-8 length of a
    sample of it (+24 bytes a variable-length string), once in the item table and again in each
    set's row text, plus the integer columns and each set's ids and row tables."""
    n = len(layout.items["id"])
    if n == 0:
        return 96 * len(layout.shards)
    from .columns import LazyChunks, take

    at = np.linspace(0, n - 1, min(n, 1024)).astype(np.int64)
    lazy = next((c for c in layout.items.values() if isinstance(c, LazyChunks)), None)
    if lazy is not None:  # columns read from the shards: sample within at most 16 of them
        which = np.searchsorted(lazy.bounds, at, side="right") - 1
        at = at[np.isin(which, np.unique(which)[:: max(1, len(np.unique(which)) // 16)])]
    mean = {c: float(np.mean([len(str(v).encode("utf-8", "surrogateescape")) for v in take(layout.items[c], at)]))
            for c in ITEM_STR_COLUMNS}
    items = n * (sum(mean.values()) + 24 * len(ITEM_STR_COLUMNS) + 8 * len(ITEM_INT_COLUMNS))
    per_row = sum(mean[c] + 1 for c in ("id", "label", "split", "uri", "text", "sha256", "meta")) + mean["id"] + 24 + 8
    return int(items + sum(len(sl.ids) for sl in layout.sets.values()) * per_row + 96 * len(layout.shards))


def _strings(group, name: str, values: np.ndarray, step: int = 1 << 16, feed=None) -> None:
    """A UTF-8 string dataset written `step` values at a time: h5py encodes what it writes in one
    go, so one call for a column of millions would hold all of it encoded again at once.
    `feed(name, values)`, when given, sees each slice as written."""
    import h5py

    from .columns import objects

    ds = group.create_dataset(name, shape=(len(values),), dtype=h5py.string_dtype("utf-8"))
    for a in range(0, len(values), step):
        vals = objects(values, a, a + step)
        ds[a : a + step] = vals
        if feed is not None:
            feed(name, vals)


def write_items(g, items: dict, str_cols: dict) -> str:
    """The item table into group `g` (string columns from `str_cols`, see `_indexable`), hashed as
    it is written (one read of each column: a column read from the shards costs ~1 ms a shard);
    returns its digest (shards.items_digest of the same table)."""
    from .shards import ItemsDigest

    digest = ItemsDigest()
    n = len(items["id"])
    for c in ITEM_STR_COLUMNS:  # the order items_digest hashes them in
        _strings(g, c, str_cols[c], feed=digest.strings)
    for c in ITEM_INT_COLUMNS:
        col = np.asarray(items[c], dtype=np.int64).reshape(n)
        g.create_dataset(c, data=col)
        digest.ints(col)
    return digest.hexdigest()


def row_tables(sl: SetLayout, str_cols: dict[str, np.ndarray], shard_root_rel: str, columns=None, sink=None):
    """A set's row tables as the catalog records them: (ids, item_row, row_sha256, row-to-shard
    pieces). `str_cols` are the item table's string columns as object arrays; `columns` the row
    columns checksummed (default: this schema's). `sink(block, column, bytes)`, when given, gets
    each block's text as it was hashed (the catalog's row text, store/rowtext.py). `embed verify`
    recomputes them from the shards with this same function."""
    import hashlib

    from .columns import objects, take
    from .integrity import ROW_BLOCK, ROW_COLUMNS, column_digest, joined_text

    ROW_COLUMNS = columns or ROW_COLUMNS  # noqa: N806
    n = len(sl.ids)
    at = np.asarray(sl.item_rows, dtype=np.int64).reshape(n)
    digests = []
    for k, b0 in enumerate(range(0, n, ROW_BLOCK)):
        pos = at[b0 : b0 + ROW_BLOCK]
        row = []
        for c in ROW_COLUMNS:
            data = joined_text(objects(sl.ids, b0, b0 + ROW_BLOCK) if c == "id" else take(str_cols[c], pos))
            row.append(hashlib.sha256(data).hexdigest())
            if sink is not None:
                sink(k, c, data)
        digests.append(row + [column_digest(pos)])
    digests = np.array(digests, dtype="S64").reshape(len(digests), len(ROW_COLUMNS) + 1)
    pieces, dest = [], 0
    for shard, _shard_rows, start, stop in sl.runs:
        pieces.append((dest, dest + stop - start, f"{shard_root_rel}/{shard}", "vectors", start, stop))
        dest += stop - start
    return sl.ids, at, digests, pieces


def read_shard_stats(path: Path) -> dict[str, tuple[int, int]]:
    """The (size, mtime_ns) the catalog recorded for each shard it lists ((-1, -1): none recorded)."""
    import h5py

    with h5py.File(path, "r") as f:
        if "shards" not in f:
            return {}
        names = list(f["shards"].asstr()[()])
        if "shard_size" not in f:
            return {n: (-1, -1) for n in names}
        return dict(zip(names, zip(f["shard_size"][()].tolist(), f["shard_mtime_ns"][()].tolist())))
