"""Appending to the catalog: a build of new items never rewrites the rows already there.

Each update writes the rows committed since the last one into a new segment file under
`<store>.d/catalog/`, then replaces the catalog with a *head*: the datasets of a catalog written
whole (store/catalog.py), where each row-aligned one (the item table, each set's ids, item_row and
row text) is an HDF5 virtual dataset over the catalog written whole that appending started from
(kept by a hard link, `base-*.h5`) and the segments. Readers, plain h5py among them, read a head
as any catalog. The small tables (shard list, each set's row checksums and row-text block table,
the vectors' map) are written whole. An update so costs its new rows plus one mapping per part and
shard, not the rows so far (at 2M rows a whole rewrite took ~25 s, and grew with the store). A
build's background updates append (ingest/writer.py), and so does its last step, which then
extends each set's index (Store.finish_append): the head stays, and the next build of new items
goes on from it.

Why not append to the catalog file in place: readers during a build hold it open as a consistent
snapshot, and an HDF5 file changed under an open reader is not safe to read. HDF5's SWMR mode
allows appends to open datasets, but not the new datasets and attributes an update makes.

Checks: the item table carries one digest per part (`items_segments` on /items, JSON [[end row,
sha256], ...], what `items_sha256` is for a whole table; shards.ItemsDigests checks it); each set's
`row_sha256` covers its row blocks across parts as in a whole catalog; the open block's bytes are
checked against it before an appender takes them up; segments are written atomically and never
changed; a merge checks each part's item table as it copies it (the ids, item_row and row text it
copies are checked by readers against `row_sha256`, as in a catalog written whole).

Only a build whose every committed id is new to the store appends (the runner says so): an id
committed again must replace its older row, which takes the whole merge (catalog.compute_layout),
and that rewrite (Store.refresh) ends the head. Segments merge eight at a time, like a counter in
base 8, so a head has at most 7 per level and a row is copied about log8(updates) times. Parts a
new catalog no longer uses are removed by a later sweep once GRACE_S has passed, so that a reader
holding the older catalog open reads on meanwhile.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_h5, fault, fsync_dir
from .schema import FORMAT, ITEM_COLUMNS, ITEM_STR_COLUMNS, SCHEMA_VERSION
from .shards import as_str

FOLDER = "catalog"  # under <store>.d/
PARTS = "segments"  # a head's parts: JSON of [{file (relative to the catalog's folder), items, digest, level, sets}]
ITEMS_SEGMENTS_ATTR = "items_segments"
FANOUT = 8
_COPY_ROWS = 1 << 16
_COPY_BYTES = 16 << 20


def is_head(f) -> bool:
    """Whether an open catalog is a head (its rows in segments) rather than written whole."""
    return PARTS in f


def parts_of(f) -> list[str]:
    """The files (relative to the catalog's folder) an open catalog reads its rows through."""
    return [p["file"] for p in json.loads(f[PARTS].asstr()[()])] if PARTS in f else []


# A segment a new catalog no longer uses is kept this long before a sweep removes it: a reader that
# holds the older catalog open (a search snapshot, an export) reads its rows through it meanwhile.
GRACE_S = 900.0  # EMBEDSTORE_SEGMENT_GRACE_S overrides (see `grace`)


def grace() -> float:
    from ..settings import env_number

    return env_number("EMBEDSTORE_SEGMENT_GRACE_S", GRACE_S)


def used(catalog: Path) -> list[str] | None:
    """The part files (names) the catalog at `catalog` reads through; None when it cannot be read."""
    import h5py

    try:
        with h5py.File(catalog, "r") as f:
            return [Path(p).name for p in parts_of(f)]
    except (OSError, KeyError, ValueError):
        return None


def retire(folder: Path, names) -> None:
    """Mark part files a new catalog no longer uses: their mtime starts the grace before a sweep."""
    for name in names:
        try:
            os.utime(folder / name)
        except FileNotFoundError:
            pass


def _leftovers(catalog: Path, folder: Path, grace: float) -> list[str]:
    if not folder.is_dir():
        return []
    keep = used(catalog) if catalog.exists() else []
    if keep is None:
        return []  # the catalog cannot say what it uses: remove nothing
    cut = time.time() - grace
    out = []
    for name in os.listdir(folder):
        if name.endswith(".h5") and name.startswith(("seg-", "base-")) and name not in keep:
            try:
                if os.stat(folder / name).st_mtime < cut:
                    out.append(name)
            except FileNotFoundError:
                pass
    return out


def due(catalog: Path, folder: Path) -> bool:
    """Whether a sweep would remove something (readers take the writer lock only then)."""
    return bool(_leftovers(catalog, folder, grace()))


def sweep(catalog: Path, folder: Path) -> int:
    """Remove part files the catalog does not use once their grace is over (what merges and the
    final rewrite retired, or what a killed build left). The caller holds the writer lock."""
    gone = 0
    for name in _leftovers(catalog, folder, grace()):
        try:
            (folder / name).unlink()
            gone += 1
        except FileNotFoundError:
            pass
    if gone:
        fsync_dir(folder)
    return gone


@dataclass
class _Part:
    file: str  # relative to the catalog's folder, as virtual dataset sources name it
    items: int
    digest: str  # items digest of its rows
    level: int  # a segment's merge level; the base never merges
    sets: dict = field(default_factory=dict)  # set -> {"rows": n, "bytes": {column: n}}


@dataclass
class _SetTail:
    """A set as the head describes it, with the open (last, partial) block's running checksums."""

    attrs: dict
    dim: int
    dtype: str
    rows: int = 0
    stale: int = 0
    pieces: list = field(default_factory=list)  # (first row, end row, shard file, dataset, shard first, shard end, shard rows)
    digests: list = field(default_factory=list)  # row_sha256 of complete blocks
    starts: list = field(default_factory=list)  # block_start of complete blocks (first: zeros)
    totals: list = field(default_factory=list)  # bytes per row column so far
    hashes: list = field(default_factory=list)  # the open block's sha256 per row column, then of its item_row
    open_rows: int = 0

    def start(self, ncols: int) -> None:
        self.starts = [[0] * ncols]
        self.totals = [0] * ncols
        self._reset_hashes(ncols)

    def _reset_hashes(self, ncols: int) -> None:
        self.hashes = [hashlib.sha256() for _ in range(ncols + 1)]
        self.open_rows = 0

    def close_block(self) -> None:
        self.digests.append([h.hexdigest() for h in self.hashes])
        self.starts.append(list(self.totals))
        self._reset_hashes(len(self.totals))

    def tables(self) -> tuple[np.ndarray, np.ndarray]:
        """(row_sha256, block_start) as a catalog written whole would hold them."""
        digests = [*self.digests, [h.copy().hexdigest() for h in self.hashes]] if self.open_rows else self.digests
        starts = [*self.starts, list(self.totals)] if self.open_rows else self.starts
        ncols = len(self.totals)
        return (np.array(digests, dtype="S64").reshape(len(digests), ncols + 1),
                np.asarray(starts, dtype=np.int64).reshape(len(starts), ncols))


class Appender:
    """The head of one build: what the catalog holds so far, and `append` for the shards since."""

    def __init__(self, catalog: Path, folder: Path, shard_root_rel: str):
        self.catalog, self.folder, self.shard_root_rel = catalog, folder, shard_root_rel
        self.parts: list[_Part] = []
        self.sets: dict[str, _SetTail] = {}
        self.items = self.ok = 0
        self.shards: list[str] = []
        self.stats: list[tuple[int, int]] = []
        self.created: str | None = None
        self.retired: list[str] = []  # merged-away segment files, retired once a head no longer names them
        self.grown: set[str] = set()  # sets this appender added rows to

    # ---- the catalog the build started from ---------------------------------------------------
    @classmethod
    def start(cls, catalog: Path, folder: Path, shard_root_rel: str) -> "Appender | None":
        """From the catalog at `catalog`: a head goes on with its parts; a catalog written whole
        becomes the base (a hard link keeps it). None when it cannot be appended to (another schema
        or shard folder, no checksums, no hard links); the caller rewrites the catalog whole then.
        The open block's bytes are checked against the catalog's row checksums as they are read, so
        a part that went missing (read as fill values) is never taken into new checksums."""
        import h5py

        from ..errors import DamagedStoreError
        from .integrity import ROW_BLOCK, ROW_COLUMNS, vds_row_map
        from .rowtext import GROUP

        self = cls(catalog, folder, shard_root_rel)
        with h5py.File(catalog, "r") as f:
            if int(f.attrs.get("embedstore_schema", 0)) != SCHEMA_VERSION or "shards" not in f:
                return None
            if as_str(f.attrs.get("shard_dir", "")) != shard_root_rel:
                return None
            self.created = as_str(f.attrs.get("created", "")) or None
            g = f["items"]
            n = len(g["id"])
            head = is_head(f)
            want = g.attrs.get("items_sha256")
            if not head and want is None:
                return None
            self.shards = list(f["shards"].asstr()[()])
            self.stats = list(zip(f["shard_size"][()].tolist(), f["shard_mtime_ns"][()].tolist())) if "shard_size" in f else \
                [(-1, -1)] * len(self.shards)
            self.items, self.ok = n, int(g.attrs.get("ok", 0))
            if head:
                self.parts = [_Part(**p) for p in json.loads(f[PARTS].asstr()[()])]
                if sum(p.items for p in self.parts) != n or any(not (catalog.parent / p.file).is_file() for p in self.parts):
                    return None  # a part went missing: only a whole rewrite from the shards can tell what it held
            base = _Part("", n, as_str(want or ""), level=1 << 30)
            for name, sg in f["vectors"].items():
                rows = len(sg["ids"])
                attrs = {k: v for k, v in sg.attrs.items() if k not in ("count", "stale_rows", "row_block", "row_map_sha256")}
                st = _SetTail(attrs, int(sg.attrs["dim"]), str(as_str(sg.attrs["dtype"])), rows=rows, stale=int(sg.attrs.get("stale_rows", 0)))
                st.start(len(ROW_COLUMNS))
                if rows:
                    text = sg.get(GROUP)
                    digests = sg["row_sha256"][()]
                    if text is None or digests.shape[1] != len(ROW_COLUMNS) + 1 or int(sg.attrs.get("row_block", 0)) != ROW_BLOCK:
                        return None
                    starts = text["block_start"][()]
                    full = rows // ROW_BLOCK
                    st.digests = [[as_str(v) for v in r] for r in digests[:full]]
                    st.starts = [list(map(int, r)) for r in starts[: full + 1]]
                    st.totals = [int(v) for v in starts[-1]]
                    if rows % ROW_BLOCK:  # the open block: its bytes so far go into the running checksums
                        for ci, c in enumerate(ROW_COLUMNS):
                            st.hashes[ci].update(text[c][int(starts[full, ci]) : int(starts[full + 1, ci])].tobytes())
                        st.hashes[-1].update(np.asarray(sg["item_row"][full * ROW_BLOCK : rows], dtype="<i8").tobytes())
                        st.open_rows = rows - full * ROW_BLOCK
                        if [h.copy().hexdigest() for h in st.hashes] != [as_str(v) for v in digests[full]]:
                            raise DamagedStoreError(f"the catalog {catalog.name} is damaged (vector set {name}: its last row "
                                                    "block does not match its checksum); it is rewritten from the shards")
                    ds = sg["vectors"]
                    srcs = {m.file_name: m.src_space.shape[0] for m in ds.virtual_sources()} if ds.is_virtual else {}
                    st.pieces = [(*p, srcs[p[2]]) for p in vds_row_map(ds)]
                    base.sets[name] = {"rows": rows, "bytes": {c: len(text[c]) for c in ROW_COLUMNS}}
                self.sets[name] = st
        if not head and (n or any(p["rows"] for p in base.sets.values())):
            folder.mkdir(exist_ok=True)
            link = folder / f"base-{time.time_ns():020d}-{secrets.token_hex(4)}.h5"
            try:
                os.link(catalog, link)  # the catalog is only ever replaced, never changed: this name keeps it
            except OSError:  # a file system without hard links: the build rewrites the catalog whole
                return None
            fsync_dir(folder)
            base.file = f"{folder.parent.name}/{FOLDER}/{link.name}"
            self.parts.append(base)
        return self

    def set_index(self, set_name: str, attrs: dict) -> None:
        """The index attributes (catalog.index_attrs) a set's next head records."""
        st = self.sets[set_name]
        st.attrs = {**{k: v for k, v in st.attrs.items() if not k.startswith("index_")}, **attrs}

    # ---- an update --------------------------------------------------------------------------
    def append(self, layout, keys: list[str], stats: list[tuple[int, int]]) -> None:
        """Add the rows of `layout` (catalog._layout_unique over the shards `keys`, committed after
        every shard so far, with ids new to the store), then replace the catalog with a new head."""
        from ..atomic import check_free_space
        from .catalog import _catalog_bytes, _indexable, _strings, ok_count, write_items
        from .columns import objects, take
        from .integrity import ROW_BLOCK, ROW_COLUMNS, joined_text

        self.folder.mkdir(exist_ok=True)
        check_free_space(self.folder, 2 * _catalog_bytes(layout) + (64 << 10))  # the segment, then the head
        n0, n_new = self.items, len(layout.items["id"])
        str_cols = {c: _indexable(layout.items[c]) for c in ITEM_STR_COLUMNS}
        name = f"seg-{time.time_ns():020d}-{secrets.token_hex(4)}.h5"
        part = _Part(f"{self.folder.parent.name}/{FOLDER}/{name}", n_new, "", level=0)
        with atomic_h5(self.folder / name) as f:
            f.attrs["format"] = f"{FORMAT}-catalog-segment"
            part.digest = write_items(f.create_group("items"), layout.items, str_cols)
            ok = ok_count(str_cols["status"])
            for set_name, sl in layout.sets.items():
                st = self.sets.get(set_name)
                if st is None:
                    st = self.sets[set_name] = _SetTail(dict(sl.attrs), sl.dim, sl.dtype)
                    st.start(len(ROW_COLUMNS))
                m = len(sl.ids)
                sg = f.create_group(f"vectors/{set_name}")
                _strings(sg, "ids", sl.ids)
                at = np.asarray(sl.item_rows, dtype=np.int64).reshape(m)
                sg.create_dataset("item_row", data=at + n0)
                tg = sg.create_group("row_text")
                text = {c: tg.create_dataset(c, shape=(0,), maxshape=(None,), chunks=(1 << 16,), dtype=np.uint8) for c in ROW_COLUMNS}
                r = 0
                while r < m:  # pieces that end where the set's row blocks end, so each block's checksum closes
                    k = min(m - r, ROW_BLOCK - st.open_rows)
                    pos = at[r : r + k]
                    for ci, c in enumerate(ROW_COLUMNS):
                        data = joined_text(objects(sl.ids, r, r + k) if c == "id" else take(str_cols[c], pos))
                        ds = text[c]
                        ds.resize((len(ds) + len(data),))
                        if data:
                            ds[len(ds) - len(data) :] = np.frombuffer(data, dtype=np.uint8)
                        st.hashes[ci].update(data)
                        st.totals[ci] += len(data)
                    st.hashes[-1].update(np.asarray(pos + n0, dtype="<i8").tobytes())
                    st.open_rows += k
                    r += k
                    if st.open_rows == ROW_BLOCK:
                        st.close_block()
                dest = st.rows
                for shard, shard_rows, a, b in sl.runs:
                    st.pieces.append((dest, dest + b - a, f"{self.shard_root_rel}/{shard}", "vectors", a, b, shard_rows))
                    dest += b - a
                st.rows += m
                st.stale += sl.stale
                self.grown.add(set_name)
                part.sets[set_name] = {"rows": m, "bytes": {c: len(text[c]) for c in ROW_COLUMNS}}
        fault("segment:written")
        self.parts.append(part)
        self.items += n_new
        self.ok += ok
        self.shards += keys
        self.stats += stats
        self._merge()
        self.write_head()

    # ---- merging ----------------------------------------------------------------------------
    def _merge(self) -> None:
        """While the last FANOUT segments share a level, copy them into one of the next level."""
        while len(self.parts) >= FANOUT and len({p.level for p in self.parts[-FANOUT:]}) == 1 and self.parts[-1].level < 1 << 30:
            group = self.parts[-FANOUT:]
            self.parts[-FANOUT:] = [self._merged(group)]
            self.retired += [p.file for p in group]
            fault("segment:merged")

    def _merged(self, group: list[_Part]) -> _Part:
        """One segment with the rows of `group` (in order), each part's item table checked against its
        digest as it is read: a segment damaged on disk is refused, never copied under a new digest."""
        import h5py

        from ..errors import DamagedStoreError
        from .integrity import ROW_COLUMNS
        from .shards import ItemsDigest

        root = self.catalog.parent
        name = f"seg-{time.time_ns():020d}-{secrets.token_hex(4)}.h5"
        out = _Part(f"{self.folder.parent.name}/{FOLDER}/{name}", sum(p.items for p in group), "", group[0].level + 1)
        srcs = [h5py.File(root / p.file, "r") for p in group]
        try:
            with atomic_h5(self.folder / name) as f:
                f.attrs["format"] = f"{FORMAT}-catalog-segment"
                merged, checks = ItemsDigest(), [ItemsDigest() for _ in group]
                for c in ITEM_COLUMNS:
                    def feed(i, vals, c=c):
                        for d in (merged, checks[i]):
                            if c in ITEM_STR_COLUMNS:
                                d.strings(c, vals)
                            else:
                                d.ints(vals)

                    _concat(f, f"items/{c}", [(s, f"items/{c}") for s in srcs], feed, c in ITEM_STR_COLUMNS)
                for p, d in zip(group, checks):
                    if d.hexdigest() != p.digest:
                        raise DamagedStoreError(f"catalog segment {p.file} does not match its checksum; the catalog is "
                                                "rewritten whole from the shards")
                out.digest = merged.hexdigest()
                for set_name in dict.fromkeys(s for p in group for s in p.sets):
                    have = [(s, p) for s, p in zip(srcs, group) if set_name in p.sets]
                    base = f"vectors/{set_name}"
                    _concat(f, f"{base}/ids", [(s, f"{base}/ids") for s, _ in have], None, True)
                    _concat(f, f"{base}/item_row", [(s, f"{base}/item_row") for s, _ in have], None, False)
                    for c in ROW_COLUMNS:
                        _concat(f, f"{base}/row_text/{c}", [(s, f"{base}/row_text/{c}") for s, _ in have], None, False,
                                step=_COPY_BYTES)
                    out.sets[set_name] = {"rows": sum(p.sets[set_name]["rows"] for _, p in have),
                                          "bytes": {c: sum(p.sets[set_name]["bytes"][c] for _, p in have) for c in ROW_COLUMNS}}
        finally:
            for s in srcs:
                s.close()
        return out

    # ---- the head ---------------------------------------------------------------------------
    def write_head(self) -> None:
        """Replace the catalog with a head over the parts so far (atomically), then remove retired segments."""
        import h5py

        from .catalog import write_file_attrs, write_shard_list, write_vectors
        from .integrity import ROW_BLOCK, ROW_COLUMNS, row_map_digest

        str_dt = h5py.string_dtype("utf-8")
        # merged-away parts start their grace now, before the head that drops them is in place: a kill
        # after the rename must not leave them looking old (a sweep keeps what the current catalog uses)
        retire(self.folder, [Path(p).name for p in self.retired])
        with atomic_h5(self.catalog) as f:
            write_file_attrs(f, self.created, self.shard_root_rel)
            f.create_dataset(PARTS, data=json.dumps([dataclasses.asdict(p) for p in self.parts]), dtype=str_dt)
            g = f.create_group("items")
            for c in ITEM_COLUMNS:
                _virtual(g, c, str_dt if c in ITEM_STR_COLUMNS else np.int64, [(p.file, f"items/{c}", p.items) for p in self.parts])
            g.attrs["count"] = self.items
            g.attrs["ok"] = self.ok
            ends = np.cumsum([p.items for p in self.parts]).tolist()
            g.attrs[ITEMS_SEGMENTS_ATTR] = json.dumps([[int(e), p.digest] for e, p in zip(ends, self.parts)])
            write_shard_list(f, self.shards, self.stats)
            vg = f.create_group("vectors")
            for set_name, st in self.sets.items():
                sg = vg.create_group(set_name)
                for k, v in st.attrs.items():
                    sg.attrs[k] = v
                sg.attrs["count"] = st.rows
                sg.attrs["stale_rows"] = st.stale
                sg.attrs["row_block"] = ROW_BLOCK
                have = [p for p in self.parts if p.sets.get(set_name, {}).get("rows")]
                base = f"vectors/{set_name}"
                _virtual(sg, "ids", str_dt, [(p.file, f"{base}/ids", p.sets[set_name]["rows"]) for p in have])
                _virtual(sg, "item_row", np.int64, [(p.file, f"{base}/item_row", p.sets[set_name]["rows"]) for p in have])
                digests, starts = st.tables()
                tg = sg.create_group("row_text")
                for c in ROW_COLUMNS:
                    _virtual(tg, c, np.uint8, [(p.file, f"{base}/row_text/{c}", p.sets[set_name]["bytes"][c]) for p in have])
                tg.create_dataset("block_start", data=starts)
                sg.create_dataset("row_sha256", data=digests)
                sg.attrs["row_map_sha256"] = row_map_digest([p[:6] for p in st.pieces])
                write_vectors(sg, st.rows, st.dim, st.dtype, st.pieces)
        fault("head:written")
        self.retired.clear()
        sweep(self.catalog, self.folder)


def _virtual(group, name: str, dtype, sources: list[tuple[str, str, int]]) -> None:
    """Dataset `name`: the concatenation of `sources` ((file, dataset, rows), in order) as a virtual dataset."""
    import h5py

    sources = [s for s in sources if s[2]]
    total = sum(n for _, _, n in sources)
    if not total:
        group.create_dataset(name, shape=(0,), dtype=dtype)
        return
    vl = h5py.VirtualLayout(shape=(total,), dtype=dtype)
    at = 0
    for file, dset, n in sources:
        vl[at : at + n] = h5py.VirtualSource(file, dset, shape=(n,))
        at += n
    group.create_virtual_dataset(name, vl)


def _concat(f, name: str, sources, feed, strings: bool, step: int = _COPY_ROWS) -> None:
    """Dataset `name` in `f`: the sources' datasets one after another, copied `step` values at a
    time; `feed(i, values)` sees each slice of source i as read."""
    import h5py

    total = sum(len(s[d]) for s, d in sources)
    dtype = h5py.string_dtype("utf-8") if strings else sources[0][0][sources[0][1]].dtype
    out = f.create_dataset(name, shape=(total,), dtype=dtype)
    at = 0
    for i, (s, d) in enumerate(sources):
        ds = s[d].asstr() if strings else s[d]
        n = len(s[d])
        for a in range(0, n, step):
            vals = ds[a : a + step]
            if feed is not None:
                feed(i, np.asarray(vals, dtype=object) if strings else vals)
            out[at + a : at + a + len(vals)] = vals
        at += n

