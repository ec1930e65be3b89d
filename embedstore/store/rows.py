"""The one vector reader: a vector set's rows joined with the items table, streamed in chunks by
row mask from the catalog (`SetRows.chunks`, `fetch`, `load`, `stream`), and the shard pieces the
index builder reads before the catalog lists them (`read_runs`). Every block is checked before use:
vectors for finiteness, each set's row-to-shard map and its row metadata against the checksums the
catalog recorded (schema 2 catalogs; a schema 1 catalog is read the old way, joined in memory)."""

from __future__ import annotations

import bisect
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import DamagedStoreError, StoreError
from .shards import as_str

# SetRows attribute -> the catalog column it holds (row-aligned)
_ATTR_COLUMN = {"ids": "id", "labels": "label", "splits": "split", "uris": "uri", "texts": "text", "shas": "sha256",
                "metas": "meta"}
_COLUMN_ATTR = {c: a for a, c in _ATTR_COLUMN.items()}
_WINDOW = 1 << 16  # item rows read at once when a block's items are scattered over the table


class SetRows:
    """Row-aligned metadata of one vector set (ids, labels, splits, uris, texts, shas); vectors
    stay on disk. The metadata columns load on first use; `stream` and `slabs` never load them,
    so a full pass (export) holds one block in memory however large the set. `Store.rows` gives
    one pinned to the catalog it opened (a consistent snapshot while a build commits)."""

    def __init__(self, store_path: str, catalog, set_name: str, provenance: dict, ids=None, labels=None, splits=None,
                 uris=None, texts=None, shas=None, metas=None, count: int | None = None):
        self.store_path = store_path
        self.catalog = catalog  # Path of the catalog file
        self.shown = str(catalog)  # the store as the user named it, in the commands messages suggest (set_rows sets it)
        self.set_name = set_name
        self.provenance = provenance
        given = {"ids": ids, "labels": labels, "splits": splits, "uris": uris, "texts": texts, "shas": shas,
                 "metas": metas if metas is not None or ids is None else np.full(len(ids), "", dtype=object)}
        self._cols: dict | None = given if ids is not None else None
        self._count = len(ids) if ids is not None else int(count or 0)
        self._reader = None  # open dataset for `fetch`
        self._pinned = None  # catalog held open by `pin`
        self._map_file, self._map = None, None  # the catalog file whose row-to-shard map was checked, and the map
        self.unit = as_str(provenance.get("normalize", "")) == "l2"  # rows read back as unit vectors (`unit_rows`)
        self._content = None  # (content key per row, argsort of the keys, sorted keys), for `same_content`

    def __repr__(self) -> str:
        return f"SetRows({self.set_name!r}, {self._count} rows, catalog={str(self.catalog)!r})"

    def __len__(self) -> int:
        return self._count

    @property
    def dim(self) -> int:
        return int(self.provenance["dim"])

    # ---- row metadata, loaded on first use ---------------------------------------------------
    def _columns(self) -> dict:
        if self._cols is None:
            parts = {c: [] for c in _ATTR_COLUMN.values()}
            for _start, _X, meta in self.stream(vectors=False, chunk_rows=1 << 30, raw=True):
                for c in parts:
                    parts[c].append(meta[c].strings())
            self._cols = {attr: np.concatenate(parts[c]) if parts[c] else np.zeros(0, dtype=object)
                          for attr, c in _ATTR_COLUMN.items()}
        return self._cols

    def _col(name):  # noqa: N805 - a property factory, used in the class body only
        def get(self):
            return self._columns()[name]

        def put(self, value):
            self._columns()[name] = value

        return property(get, put)

    ids = _col("ids")
    labels = _col("labels")
    splits = _col("splits")
    uris = _col("uris")
    texts = _col("texts")
    shas = _col("shas")
    metas = _col("metas")  # item metadata as canonical JSON ("" for none): see `metadata`
    del _col

    # ---- vectors ----------------------------------------------------------------------------
    def _open(self):
        import h5py

        return _Borrowed(self._pinned) if self._pinned is not None else h5py.File(self.catalog, "r")

    def _vectors(self, f):
        """The set's vector dataset in the open catalog `f`, its row-to-shard map checked against
        the checksum the catalog recorded (once per open file: it reads the mapping, not the rows)."""
        from .integrity import row_map_digest, vds_row_map

        g = f["vectors"][self.set_name]
        ds = g["vectors"]
        if f is not self._map_file:
            pieces = vds_row_map(ds)
            want = g.attrs.get("row_map_sha256")
            if want is not None and row_map_digest(pieces) != as_str(want):
                raise DamagedStoreError(f"the catalog {self.catalog} is damaged (vector set {self.set_name}: its row-to-shard "
                                        f"map does not match its checksum); run `embed verify {self.shown} --repair`")
            # the map of the file in use (a pinned catalog, or the one just opened); holding the file
            # object itself means a later file is never mistaken for it (a writer may have replaced the catalog)
            self._map_file, self._map = f, pieces
        return ds

    def _read(self, f, ds, a: int, b: int) -> np.ndarray:
        """Rows [a, b) in the stored dtype. A virtual dataset's rows are read from its shard files by
        its (checked) row-to-shard map, one file open at a time: reading through the virtual dataset
        keeps every source file open with its caches, about 10 MB per shard read, until it closes."""
        pieces = self._map if (f is self._map_file and ds.is_virtual) else None
        if not pieces:  # not virtual (no rows), or another file's map is in use: read through the dataset
            return ds[a:b]
        import h5py

        out = np.empty((b - a, ds.shape[1]), dtype=ds.dtype)
        k = max(0, bisect.bisect_right(pieces, (a, np.inf)) - 1)
        covered = 0
        root = Path(self.catalog).parent
        while k < len(pieces) and pieces[k][0] < b:
            v0, v1, name, dset, s0, _s1 = pieces[k]
            lo, hi = max(a, v0), min(b, v1)
            if lo < hi:
                try:
                    with h5py.File(root / name, "r") as sf:
                        sf[dset].read_direct(out, np.s_[s0 + lo - v0 : s0 + hi - v0], np.s_[lo - a : hi - a])
                except (OSError, KeyError, ValueError, TypeError) as e:
                    raise self._unreadable(f, lo, name, e) from None
                covered += hi - lo
            k += 1
        if covered != b - a:
            raise self._damaged_rows(f"its row-to-shard map does not cover rows {a}-{b - 1}")
        return out

    def _unreadable(self, f, row: int, shard: str, e: Exception) -> StoreError:
        which = _decoded([f["vectors"][self.set_name]["ids"][row]])[0]
        return StoreError(f"vector set {self.set_name} cannot read {which} from shard {Path(shard).name} ({type(e).__name__}): "
                          f"the shard file under {self.store_path}.d is missing or damaged; re-run `embed build` to re-embed those items")

    def chunks(self, mask: np.ndarray | None = None, chunk_rows: int = 16384) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (row positions, float32 vectors) for the rows where `mask` is true, in row order.

        Reads contiguous slabs and selects in memory: memory stays at one slab however large the set."""
        n = len(self)
        if mask is not None and not mask.any():
            return
        with self._open() as f:
            ds = self._vectors(f)
            for s in range(0, n, chunk_rows):
                e = min(n, s + chunk_rows)
                sel = np.arange(s, e) if mask is None else np.flatnonzero(mask[s:e]) + s
                if len(sel) == 0:
                    continue
                block = self._read(f, ds, s, e).astype(np.float32)[sel - s]
                bad = ~np.isfinite(block).all(axis=1)
                if bad.any():
                    raise self._non_finite(f, sel[bad], np.isnan(block[bad]).all())
                yield sel, unit_rows(block) if self.unit else block

    def _non_finite(self, f, rows: np.ndarray, all_nan: bool) -> StoreError:
        which = ", ".join(_decoded(f["vectors"][self.set_name]["ids"][int(r)] for r in rows[:3]))
        if all_nan:
            return StoreError(f"vector set {self.set_name} reads NaN for {which}: a shard file under "
                              f"{self.store_path}.d is missing or damaged; re-run `embed build` to re-embed those items")
        return StoreError(f"vector set {self.set_name} has non-finite values (NaN or inf) for {len(rows)} item(s), "
                          f"e.g. {which}; rebuild the store with `embed build` (float16 overflow: use --normalize l2)")

    def slabs(self, chunk_rows: int = 65536) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (first row, vectors in the stored dtype) for consecutive slabs of every row: the
        fastest full read, with the same finiteness check as `chunks`."""
        with self._open() as f:
            ds = self._vectors(f)
            n = len(self)
            for s in range(0, n, chunk_rows):
                block = self._read(f, ds, s, min(n, s + chunk_rows))
                _check_finite(self, f, s, block)
                yield s, block

    def stream(self, vectors: bool = True, chunk_rows: int = 16384, columns=None, raw: bool = False
               ) -> Iterator[tuple[int, np.ndarray | None, dict]]:
        """Yield (first row, vectors in the stored dtype or None, metadata) for consecutive chunks of
        at most `chunk_rows` rows, every row in order. Metadata maps each of `columns` (default:
        all of integrity.ROW_COLUMNS: id, label, split, uri, text, sha256, meta) to the chunk's
        values: an object array of UTF-8 bytes (str for a schema 1 catalog), or with `raw` a
        `rowtext.Texts` (no Python object per value). Metadata is read and checked against the
        catalog's checksums a block (integrity.ROW_BLOCK rows) at a time, from the catalog's row
        text (schema 4) or else its item table: memory holds one block of it and one chunk of vectors."""
        from . import rowtext
        from .integrity import ROW_COLUMNS, column_digest, row_columns_of

        columns = list(ROW_COLUMNS if columns is None else columns)
        with self._open() as f:
            g = f["vectors"][self.set_name]
            ds = self._vectors(f) if vectors else None
            n = len(self)
            legacy = "item_row" not in g  # a schema 1 catalog: join in memory, as that schema's readers did
            text = starts = None
            if legacy:
                cols = self._legacy_columns()
                size = max(n, 1)
            else:
                size = int(g.attrs["row_block"])
                digests, ids_ds, at_ds, items = g["row_sha256"], g["ids"], g["item_row"], f["items"]
                have = row_columns_of(digests.shape)  # schema 2 catalogs lack `meta`: read as empty
                schema = int(f.attrs.get("embedstore_schema", 0))
                if have is not None and len(have) < len(ROW_COLUMNS) and schema >= 3:
                    have = None  # a schema 3 catalog checksums every row column: a narrower table is damage
                if have is None or digests.shape[0] != -(-n // size) or len(ids_ds) != n or len(at_ds) != n:
                    raise self._damaged_rows("its row tables do not have one entry per row")
                if schema >= 4:
                    text = g.get(rowtext.GROUP)
                    why = rowtext.problem(text, ROW_COLUMNS, n, digests.shape[0])
                    if why:
                        raise self._damaged_rows(why)
                    starts = text["block_start"][()] if text is not None else None
            for k, s in enumerate(range(0, n, size)):
                e = min(n, s + size)
                if legacy:
                    meta = {c: cols[_COLUMN_ATTR[c]] for c in columns}
                else:
                    want = [as_str(d) for d in digests[k]]
                    empty = column_digest(np.full(e - s, b"", dtype=object))
                    blank = [c for c in columns if c not in have or want[have.index(c)] == empty]
                    if text is not None:  # schema 4: each column's block is one read and one sha256
                        meta = {}
                        for c in columns:
                            got = rowtext.Texts.blank(e - s) if c in blank else rowtext.read_block(
                                text, c, k, starts, ROW_COLUMNS.index(c), e - s, want[ROW_COLUMNS.index(c)])
                            if isinstance(got, str):
                                raise self._damaged_rows(got)
                            meta[c] = got if raw else got.values()
                    else:
                        meta = self._item_block(ids_ds, at_ds, items, s, e, columns, blank, have, want)
                        if raw:
                            meta = {c: rowtext.Texts.of(v) for c, v in meta.items()}
                if legacy and raw:
                    meta = {c: rowtext.Texts.of(v) for c, v in meta.items()}
                for a in range(s, e, chunk_rows):
                    b = min(e, a + chunk_rows)
                    block = None
                    if ds is not None:
                        block = self._read(f, ds, a, b)
                        _check_finite(self, f, a, block)
                    yield a, block, {c: v[a - s : b - s] for c, v in meta.items()}

    def _item_block(self, ids_ds, at_ds, items, s: int, e: int, columns, blank, have, want) -> dict:
        """Rows [s, e) of `columns` read through the item table (catalogs before schema 4), checked
        against the block's digests `want`."""
        from .integrity import column_digest

        at = at_ds[s:e]
        meta = {"id": ids_ds[s:e]} if "id" in columns and "id" not in blank else {}
        meta.update({c: np.full(e - s, b"", dtype=object) for c in blank})  # e.g. no texts: nothing to read
        meta.update(_items_at(items, at, [c for c in columns if c not in meta]))
        for c, v in [("item_row", at), *meta.items()]:
            if c != "item_row" and c not in have:
                continue  # a column this catalog predates (read as blank above)
            if column_digest(v) != want[-1 if c == "item_row" else have.index(c)]:
                raise self._damaged_rows(f"its {c} column in rows {s}-{e - 1} does not match its checksum")
        return meta

    def _damaged_rows(self, why: str) -> DamagedStoreError:
        return DamagedStoreError(f"the catalog {self.catalog} is damaged (vector set {self.set_name}: {why}); "
                                 f"run `embed verify {self.shown} --repair`")

    def _legacy_columns(self) -> dict:
        if self._cols is None:
            from .store import open_store

            with open_store(self.store_path) as st:
                self._cols = _legacy_join(st, self.set_name)
        return self._cols

    def pin(self) -> "SetRows":
        """Hold the catalog open: every later read sees the rows these ids describe, even after a
        writer renames a new catalog into place (readers during a build keep a consistent snapshot)."""
        import h5py

        if self._pinned is None:
            self._pinned = h5py.File(self.catalog, "r")
            self._reader = self._vectors(self._pinned)
        return self

    def fetch(self, positions: np.ndarray) -> np.ndarray:
        """A few rows by position (random access, for re-ranking search candidates), in that order.

        The catalog stays open between calls (opening it costs ~20 ms, a row ~10 us)."""
        import h5py

        if self._reader is None:
            self._reader = self._vectors(h5py.File(self.catalog, "r"))
        ds = self._reader
        if not len(positions):
            return np.zeros((0, self.dim), np.float32)
        X = np.stack([ds[int(p)] for p in positions]).astype(np.float32)
        return unit_rows(X) if self.unit else X

    def content_keys(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(content key per row, 0 without a hash; argsort of the keys; the sorted keys), made once:
        the content keys of evaluation/seen.py, for every row of the set."""
        from ..evaluation.seen import item_keys

        if self._content is None:
            keys, valid = item_keys(self.shas)
            keys = np.where(valid, keys, np.uint64(0))
            order = np.argsort(keys, kind="stable")
            self._content = (keys, order, keys[order])
        return self._content

    def same_content(self, positions: np.ndarray, of: "SetRows | None" = None) -> np.ndarray:
        """`positions` and every other row with the content of one of them (the same file bytes or
        text under another id, by the content keys of evaluation/seen.py), sorted. With `of`, the
        positions are rows of that other set (another store's): the rows of this set with their
        content. Rows without a content hash stand for themselves alone."""
        positions = np.unique(np.asarray(positions, dtype=np.int64))
        mine = positions if of is None else np.zeros(0, dtype=np.int64)
        if not len(positions):
            return mine
        _, order, ordered = self.content_keys()
        want = np.unique((of or self).content_keys()[0][positions])
        want = want[want != 0]
        if not len(want):
            return mine
        lo, hi = np.searchsorted(ordered, want, "left"), np.searchsorted(ordered, want, "right")
        return np.union1d(mine, np.concatenate([order[a:b] for a, b in zip(lo, hi)]))

    def load_at(self, positions: np.ndarray) -> np.ndarray:
        """Rows at `positions` (any order, no repeats), returned in that order."""
        mask = np.zeros(len(self), dtype=bool)
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


def _check_finite(rows: SetRows, f, start: int, block: np.ndarray) -> None:
    from .integrity import all_finite

    if not all_finite(block):
        bad = ~np.isfinite(block.astype(np.float32)).all(axis=1)
        raise rows._non_finite(f, np.flatnonzero(bad) + start, bool(np.isnan(block[bad]).all()))


def _items_at(items, at: np.ndarray, columns) -> dict[str, np.ndarray]:
    """Item-table columns (raw UTF-8 bytes) at positions `at`, in that order. Reads one span when
    the positions are close together (a set's rows follow the item table), else windows of it."""
    if len(at) == 0:
        return {c: np.zeros(0, dtype=object) for c in columns}
    lo, hi = int(at.min()), int(at.max()) + 1
    if hi - lo <= 4 * len(at) + _WINDOW:
        spans = [(lo, hi, np.arange(len(at)))]
    else:  # scattered: read windows of the sorted positions, so memory stays at one window
        order = np.argsort(at, kind="stable")
        srt = at[order]
        cuts = [0]
        while cuts[-1] < len(srt):
            cuts.append(int(np.searchsorted(srt, srt[cuts[-1]] + _WINDOW)))
        spans = [(int(srt[a]), int(srt[b - 1]) + 1, order[a:b]) for a, b in zip(cuts, cuts[1:])]
    out = {}
    for c in columns:
        col = np.empty(len(at), dtype=object)
        if c not in items:  # columns added after the catalog was written read as empty strings
            col[:] = b""
        else:
            for a, b, which in spans:
                col[which] = items[c][a:b][at[which] - a]
        out[c] = col
    return out


def _decoded(vals) -> np.ndarray:
    """Values as str (UTF-8 bytes decoded), in an object array."""
    return np.array([v.decode("utf-8") if isinstance(v, bytes) else v for v in vals], dtype=object)



class _Borrowed:
    """A pinned file used in a `with` block without closing it."""

    def __init__(self, f):
        self.f = f

    def __enter__(self):
        return self.f

    def __exit__(self, *exc):
        return False


def set_rows(store, set_name: str) -> SetRows:
    """A set's rows in `store`: ids with each row's label, split, uri, text and sha256, loaded on
    first use (see `SetRows`), from the catalog as it is now: it is held open (`pin`), so columns
    loaded later and vectors read later describe the same rows even if a build commits meanwhile."""
    import h5py

    vs = store.get_set(set_name)
    f = h5py.File(store.path, "r")
    try:
        g = f["vectors"][set_name]
        n = len(g["ids"])
        legacy = "item_row" not in g
        if not legacy:
            rows = SetRows(str(store.path), store.path, set_name, vs.provenance, count=n)
            rows.shown = store.shown
            rows._pinned = f
            rows._reader = rows._vectors(f)
            return rows
    except BaseException:
        f.close()
        raise
    f.close()  # a schema 1 catalog (read-only; the next writer upgrades it): the old in-memory join
    rows = SetRows(str(store.path), store.path, set_name, vs.provenance, **_legacy_join(store, set_name))
    rows.shown = store.shown
    return rows


def _legacy_join(store, set_name: str) -> dict:
    with store._file() as f:
        ids = f["vectors"][set_name]["ids"].asstr()[()]
    items = store.items()
    pos = {i: k for k, i in enumerate(items["id"])}
    try:
        at = np.fromiter((pos[i] for i in ids), dtype=np.int64, count=len(ids))
    except KeyError as e:
        raise StoreError(f"vector set {set_name} has a row for id {e.args[0]!r} that the items table lacks; "
                         "re-run `embed build` to repair the catalog") from None
    return {"ids": ids, "labels": items["label"][at], "splits": items["split"][at], "uris": items["uri"][at],
            "texts": items["text"][at], "shas": items["sha256"][at], "metas": items["meta"][at]}


def runs_between(sl, start: int, stop: int) -> list[tuple[str, int, int, int]]:
    """The pieces of shard files that hold rows [start, stop) of a set: (shard, first, end, set row)."""
    out, pos = [], 0
    for shard, _n, a, b in sl.runs:
        lo, hi = max(start, pos), min(stop, pos + b - a)
        if lo < hi:
            out.append((shard, a + lo - pos, a + hi - pos, lo))
        pos += b - a
    return out


def unit_rows(X: np.ndarray) -> np.ndarray:
    """X (float32) with each non-zero row scaled to length 1, in place. The one place a set embedded
    with --normalize l2 is read as what it means: its float16 rows come back from the disk with
    lengths 1 +- ~2e-4, which made a search score a*b/|b| (not symmetric: a->b and b->a differed in
    the 4th decimal) and kNN distances differ from sqrt(2 - 2 cos)."""
    n = np.sqrt(np.einsum("ij,ij->i", X, X, dtype=np.float64)).astype(np.float32)[:, None]
    np.divide(X, n, out=X, where=n > 0)
    return X


def read_runs(shard_root: Path, runs, chunk: int = 16384, unit: bool = False) -> Iterator[np.ndarray]:
    """Stream float32 rows of shard pieces (from `runs_between`) in chunks (`unit`: as `unit_rows`)."""
    import h5py

    for shard, a, b, _row in runs:
        with h5py.File(shard_root / shard, "r") as f:
            ds = f["vectors"]
            for s in range(a, b, chunk):
                block = ds[s : min(b, s + chunk)].astype(np.float32)
                if not np.isfinite(block).all():
                    raise StoreError(f"shard {shard} holds non-finite vectors in rows {s}-{min(b, s + chunk)}: the file is "
                                     "damaged; delete it and re-run `embed build` to re-embed its items")
                yield unit_rows(block) if unit else block
