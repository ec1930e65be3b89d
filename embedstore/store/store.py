"""The Store: the only code that opens the store's HDF5 and FAISS files."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import DamagedStoreError, ProvenanceMismatchError, StoreError
from .catalog import Layout, compute_layout, read_shard_stats, write_catalog
from .index import read_index_meta, update_index
from .lock import StoreLock
from .migrations import migrate
from .provenance import _decode_attrs, _same, describe_diffs, provenance_diffs  # noqa: F401 - provenance_diffs is public
from .schema import FORMAT, ITEM_INT_COLUMNS, ITEM_STR_COLUMNS, KEY_FIELDS, SCHEMA_VERSION, missing_shards_reason, renamed_from, sidecar_dir
from .rows import read_runs, runs_between
from .shards import (ItemRows, ShardMeta, as_str, check_shard, commit_attrs, list_shards, read_shard_meta, remove_stale_tmp,
                     str_column, stray_files, write_shard)



@dataclass
class VectorSet:
    """One encoder's vectors in a store, with the provenance that made them."""

    name: str
    provenance: dict
    count: int
    stale_rows: int
    attrs: dict
    index: dict
    note: str = ""  # set by select_set when it chose among several sets

    @property
    def encoder(self) -> str:
        return self.provenance["encoder"]

    @property
    def dim(self) -> int:
        return int(self.provenance["dim"])


class NewerSchemaError(StoreError):
    """The store was written by a newer embedstore: neither read nor rewritten (never downgraded)."""


NEW_PATH = "give the store `embed build` made, or another path for a new one (the file is left as it is)"


def check_store_file(path: Path) -> int:
    """Refuse anything that is not an embedstore catalog; return its schema version."""
    import h5py

    if path.is_dir():
        if path.name.endswith(".d") and path.with_name(path.name[:-2]).is_file():  # a store's data folder, not the store
            raise StoreError(f"{path} is the data folder of the store {path.with_name(path.name[:-2])}; give that file instead")
        raise StoreError(f"{path} is a folder, not a store; give the store's file (NAME.h5, made by `embed build`), "
                         f"e.g. {path.with_name(path.name + '.h5')} for a new one")
    if not h5py.is_hdf5(path):
        raise StoreError(f"{path} is not an HDF5 file (it holds other data), so not a store; {NEW_PATH}")
    try:
        with h5py.File(path, "r") as f:
            fmt = f.attrs.get("format")
            schema = f.attrs.get("embedstore_schema")
    except OSError as e:
        raise StoreError(f"{path} cannot be opened as HDF5 ({e}); {NEW_PATH}") from e
    if fmt != FORMAT or schema is None:
        raise StoreError(f"{path} is an HDF5 file but not an embedstore store (no 'embedstore_schema' attribute); {NEW_PATH}")
    if int(schema) > SCHEMA_VERSION:
        raise NewerSchemaError(f"{path} has store schema {int(schema)}, newer than this embedstore reads ({SCHEMA_VERSION}); "
                               "upgrade embedstore")
    return int(schema)


class Store:
    """A store: the catalog file, plus `<store>.d/` with shards, indexes and the writer lock.

    Open with `open_store(path)` to read, or `open_store(path, mode="a")` to write.
    """

    def __init__(self, path: str | Path, writable: bool = False):
        self.path = Path(path).resolve()
        self.shown = str(path)  # as the user gave it: a command a message suggests then runs from where they ran
        self.sidecar = sidecar_dir(self.path)
        self.shard_root = self.sidecar / "shards"
        self.writable = writable
        self._lock = StoreLock(self.sidecar / "lock")
        self._meta_cache: dict[str, ShardMeta] = {}
        self._set_attrs: dict[str, dict] = {}
        self._created: str | None = None
        self._trusted: dict[str, tuple[int, int]] = {}  # shard -> (size, mtime_ns) whose checksums were checked
        self.notes: list[str] = []  # what opening or writing did that a user should know of (repairs, ignored files)
        self.schema = SCHEMA_VERSION  # the catalog's schema as opened (older ones are read as they are; writers upgrade)
        self._appender = None  # a build's appended catalog (store/segments.py), while it lasts

    # ---- opening -------------------------------------------------------------------------
    def _open(self, create: bool) -> "Store":
        exists = self.path.exists()
        catalog_ok = exists
        if exists:
            try:
                schema = check_store_file(self.path)
                self._read_catalog_head()
            except NewerSchemaError:
                raise
            except (StoreError, OSError, KeyError, ValueError, RuntimeError) as e:
                if not list_shards_any(self.shard_root):
                    raise
                # the catalog is derived from the shards beside it, so a damaged one is rebuilt, not refused
                if not self.writable:
                    raise StoreError(f"the catalog {self.path} is damaged ({e}); its shards are intact in {self.shard_root}: "
                                     f"run `embed verify {self.shown} --repair` or `embed build` to rebuild it") from None
                catalog_ok = False
                schema = SCHEMA_VERSION
            self.schema = schema
        elif not (create or list_shards_any(self.shard_root)):
            raise StoreError(f"store {self.path} does not exist; create it with `embed build SOURCE --store {self.path}`")
        if self.writable:
            if exists and renamed_from(self.path) is not None:  # renamed without its folder: a build here would start over
                raise StoreError(missing_shards_reason(self.path, [], self.shown))
            self._lock.acquire_or_raise(self.path)
            for d, only in [(self.path.parent, self.path.name), (self.sidecar, None), (self.sidecar / "index", None),
                            (self.sidecar / "catalog", None), (self.shard_root, None), *((d, None) for d in self._set_dirs())]:
                n = remove_stale_tmp(d, only)
                if n:
                    self.notes.append(f"removed {n} temporary file(s) left in {d} by a writer that died")
            if not catalog_ok and exists:
                self.notes.append(f"the catalog {self.path.name} was damaged; rebuilt it from the shards")
            if catalog_ok and exists and self.schema < SCHEMA_VERSION:
                self.notes += migrate(self, self.schema)  # under the lock: numbered steps up to this schema
                self.schema = SCHEMA_VERSION
            self._note_strays()
            # a head (store/segments.py) is appended to by the next build; one whose parts went is written whole
            if not catalog_ok or self._check_shards(repair=True) or self._catalog_stale() or self._head_broken():
                self.refresh(index=False)
            else:
                from .segments import FOLDER, sweep

                sweep(self.path, self.sidecar / FOLDER)  # parts retired by the last build, or left by a killed one
        else:
            if self._catalog_stale():
                lost = self._missing_shards()
                if lost:  # never quietly drop committed rows: say what is gone and how to get it back
                    why = missing_shards_reason(self.path, lost, self.shown)
                    if renamed_from(self.path) is not None:  # the fix is the rename alone
                        raise StoreError(why)
                    raise StoreError(f"{why}; their rows are not readable. Restore them, or re-run `embed build SOURCE "
                                     f"--store {self.shown}` to rebuild the catalog and re-embed those items")
                try:
                    locked = self._lock.acquire()
                except StoreError as e:  # a read-only disk: read the catalog as it is, unless it is another store's
                    self._refuse_elsewhere(e)
                    locked = False
                if locked:
                    try:  # a killed writer left shards the catalog does not list yet; a reader never moves shards
                        self.refresh(index=False, repair=False)
                    except DamagedStoreError:
                        raise
                    except StoreError as e:  # e.g. a full disk: read the catalog as it is, without those rows
                        self._refuse_elsewhere(e)
                        self.notes.append(f"could not bring the catalog up to date ({e})")
                    finally:
                        self._lock.release()
            self._check_shards(repair=False)
            self._sweep_segments()
        return self

    def _sweep_segments(self) -> None:
        """A reader removes the catalog parts a build retired once their grace is over, when no
        writer holds the store (store/segments.py): a store only read after its build is cleaned too."""
        from .segments import FOLDER, due, sweep

        folder = self.sidecar / FOLDER
        if not folder.is_dir() or not due(self.path, folder):
            return
        try:
            locked = self._lock.acquire()
        except StoreError:  # a read-only disk
            return
        if locked:
            try:
                sweep(self.path, folder)
            except OSError:
                pass
            finally:
                self._lock.release()

    def _read_catalog_head(self) -> None:
        """What opening needs from the catalog: its created time and the shard fingerprints."""
        import h5py

        with h5py.File(self.path, "r") as f:
            self._created = f.attrs.get("created")
        self._trusted = {k: v for k, v in read_shard_stats(self.path).items() if v[0] >= 0}
        self._catalog_stale()

    def _note_strays(self) -> None:
        for d in self._set_dirs():
            strays = stray_files(d)
            if strays:
                self.notes.append(f"ignored {len(strays)} file(s) in {d} that are not shards (e.g. {strays[0]})")

    def _check_shards(self, repair: bool) -> list[str]:
        """Fast path: a listed shard whose size and mtime are what the catalog recorded is trusted;
        any other is checked in full against its checksums. A damaged shard is moved aside to
        `<store>.d/damaged/` when `repair` (the next build re-embeds its items), else refused."""
        from .integrity import move_aside, shard_stat

        moved = []
        for key, stat in list(self._trusted.items()):
            path = self.shard_root / key
            if not path.exists():
                continue  # missing shards are handled by the catalog check
            if shard_stat(path) == tuple(stat):
                continue
            problem = check_shard(path)
            if problem is None:
                self._trusted[key] = shard_stat(path)
                continue
            if not repair:
                raise DamagedStoreError(f"shard {key} of {self.path.name} is damaged ({problem}); run `embed verify {self.shown} --repair`, "
                                 f"then `embed build SOURCE --store {self.shown}` to re-embed its items")
            dest = move_aside(self.sidecar, self.shard_root, key)
            self._trusted.pop(key)
            self._meta_cache.pop(key, None)
            self.notes.append(f"shard {key} was damaged ({problem}); moved it to {dest} and its items will be re-embedded")
            moved.append(key)
        return moved

    def _missing_shards(self) -> list[str]:
        import h5py

        if not self.path.exists():
            return []
        with h5py.File(self.path, "r") as f:
            listed = set(f["shards"].asstr()[()]) if "shards" in f else set()
        return sorted(listed - set(self._all_shards()))

    def close(self) -> None:
        self._lock.release()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _set_dirs(self) -> list[Path]:
        if not self.shard_root.is_dir():
            return []
        return sorted(p for p in self.shard_root.iterdir() if p.is_dir())

    def _all_shards(self) -> list[str]:
        return [f"{d.name}/{n}" for d in self._set_dirs() for n in list_shards(d)]

    def _head_broken(self) -> bool:
        """Whether the catalog is a head (store/segments.py) some of whose part files are missing."""
        from .segments import used

        parts = used(self.path)
        folder = self.sidecar / "catalog"
        return parts is None or any(not (folder / p).is_file() for p in parts)

    def _catalog_stale(self) -> bool:
        if not self.path.exists():
            return True
        import h5py

        with h5py.File(self.path, "r") as f:
            listed = set(f["shards"].asstr()[()]) if "shards" in f else set()
        return listed != set(self._all_shards()) or self._shards_elsewhere() is not None

    def _refuse_elsewhere(self, why: Exception) -> None:
        """A catalog that could not be brought up to date (`why`) is read as it is, unless it points
        at another store's shards: HDF5 would resolve them from the working folder and read those."""
        elsewhere = self._shards_elsewhere()
        if elsewhere is not None:
            raise StoreError(f"the catalog of {self.shown} points at {elsewhere}, not {self.sidecar.name}/shards (the store was "
                             f"copied or renamed), and it cannot be brought up to date here ({str(why).split(';')[0]}); "
                             "open it once where it can be written (any command does it), or copy it to a writable "
                             "folder") from None

    def _shards_elsewhere(self) -> str | None:
        """The shard folder the catalog points at when it is not this store's own: a store renamed or
        copied (S.h5 + S.h5.d) has virtual datasets and a shard_dir naming the old one."""
        import h5py

        with h5py.File(self.path, "r") as f:
            shard_dir = f.attrs.get("shard_dir")
        if isinstance(shard_dir, bytes):
            shard_dir = shard_dir.decode()
        return None if shard_dir == f"{self.sidecar.name}/shards" else str(shard_dir)

    # ---- writing -------------------------------------------------------------------------
    def commit(self, set_name: str, set_attrs: dict, items: ItemRows, vector_ids, vector_sha256, vectors: np.ndarray, shard_attrs: dict) -> str:
        """Commit one shard of rows for a vector set; durable once this returns."""
        if not self._lock.held:
            raise StoreError(f"store {self.path} is not open for writing")
        from ..atomic import disk_error

        attrs = {**commit_attrs(set_name, set_attrs, "", "", len(items)), **shard_attrs}
        try:
            return write_shard(self.shard_root / set_name, items, list(vector_ids), list(vector_sha256), vectors, attrs)
        except (OSError, RuntimeError) as e:  # RuntimeError: HDF5's failed flush (a disk filled after the free-space check)
            raise (disk_error(e, self.shard_root / set_name) or e) from e

    def refresh(self, index: bool = True, parallel=None, repair: bool | None = None) -> Layout:
        """Rebuild the catalog from the shards (and bring FAISS indexes up to date). A damaged shard
        is moved aside when `repair` (default: the store was opened for writing), else refused.

        `parallel`, when given, adds rows to large (IVF) indexes shard by shard on many workers:
        `parallel.add(index, shard_root, runs)` returns the index with those rows added."""
        metas, stats = self._checked(self.writable if repair is None else repair)
        try:
            return self._write(metas, stats, index, parallel)
        except DamagedStoreError:  # a shard changed after it was checked (store/columns.ShardColumn)
            self._meta_cache.clear()  # the next refresh checks every shard again in full
            self._trusted.clear()
            raise

    def _checked(self, repair: bool, skip=frozenset()) -> tuple[list[tuple[str, ShardMeta]], dict[str, tuple[int, int]]]:
        """Every shard's metadata (but those in `skip`), each new or changed shard checked in full
        first (a damaged one is moved aside when `repair`, else refused), and the (size, mtime) each
        was checked at."""
        from .integrity import move_aside, shard_stat

        metas, stats = [], {}
        for key in self._all_shards():
            if key in skip:
                continue
            path = self.shard_root / key
            if key not in self._meta_cache:
                if self._trusted.get(key) != shard_stat(path):  # new or changed since the catalog: check it in full
                    problem = check_shard(path)
                    if problem is not None:
                        if not (self._lock.held and repair):
                            raise DamagedStoreError(f"shard {key} of {self.path.name} is damaged ({problem}); run `embed verify "
                                             f"{self.shown} --repair`")
                        dest = move_aside(self.sidecar, self.shard_root, key)
                        self.notes.append(f"shard {key} was damaged ({problem}); moved it to {dest} and its items will be re-embedded")
                        continue
                self._meta_cache[key] = read_shard_meta(path, compact=True)
                self._trusted[key] = shard_stat(path)
            stats[key] = self._trusted[key]
            set_name = key.split("/", 1)[0]
            metas.append((set_name, self._meta_cache[key]))
            if set_name not in self._set_attrs:
                self._set_attrs[set_name] = _set_attrs_from_shard(self._meta_cache[key].attrs)
        return metas, stats

    def append_catalog(self) -> bool:
        """Bring the catalog up to date with the shards committed since by appending their rows
        (store/segments.py: the work is the new rows, not the store). For a build whose every
        committed id is new to the store. False when only a whole refresh can (the caller runs one):
        the catalog is of an older schema or not checksummed, a listed shard went, or ids repeat."""
        from .catalog import _layout_unique
        from .segments import FOLDER, Appender

        if not self._lock.held or self.schema != SCHEMA_VERSION or not self.path.exists():
            return False
        try:
            if self._appender is None:
                self._appender = Appender.start(self.path, self.sidecar / FOLDER, f"{self.sidecar.name}/shards")
                if self._appender is None:
                    return False
            ap = self._appender
            known = set(ap.shards)
            # only the new shards are read: those the catalog lists were checked on open (their
            # size and mtime), and their rows are in the catalog already
            if not known <= set(self._all_shards()):
                return False  # a shard the catalog lists is gone (moved aside as damaged)
            new, stats = self._checked(repair=True, skip=known)
            new.sort(key=lambda sm: sm[1].name)
            if not new:
                return True
            if ap.shards and new[0][1].name < max(k.split("/", 1)[1] for k in ap.shards):
                return False  # not after every shard so far: the whole merge orders them
            layout = _layout_unique(new, self._set_attrs)
            if layout is None:
                return False
            keys = [f"{s}/{m.name}" for s, m in new]
            ap.append(layout, keys, [stats[k] for k in keys])
            for k in keys:  # in the catalog now: a whole refresh, if one comes, reads them again
                self._meta_cache.pop(k, None)
            return True
        except BaseException:
            self._appender = None  # the next update starts again from the catalog on disk
            raise

    def finish_append(self, index: bool = True) -> bool:
        """A build's last step when every id it committed is new: append the last shards, bring
        each set's index up to date from the appended catalog (rows added to it, as after a whole
        refresh), and record the indexes in a last head. The catalog is never rewritten whole, so
        the step costs the build's rows, not the store's. False when only a whole refresh can."""
        from .catalog import SetLayout, index_attrs

        try:
            if not self.append_catalog():
                return False
            ap = self._appender
            if index:
                prefix = f"{self.sidecar.name}/shards/"
                for name, st in ap.sets.items():
                    if name not in ap.grown and self._index_current(name, st.rows, st.dtype == "float16"):
                        continue  # a set the build did not add to, with its index intact: its ids are not read
                    runs = [(file[len(prefix):], shard_rows, a, b) for _d, _e, file, _ds, a, b, shard_rows in st.pieces]
                    sl = SetLayout(name, st.attrs, st.dim, st.dtype, runs=runs, ids=self._set_ids(name, st.rows))
                    ap.set_index(name, index_attrs(self._index_for(sl, None)))
                ap.write_head()
        except (StoreError, OSError, KeyError, ValueError, IndexError) as e:
            # e.g. a segment damaged or gone, met by a merge: the caller rewrites the catalog from the shards
            self._appender = None
            self.notes.append(f"the catalog could not be appended to ({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}); "
                              "rewrote it whole from the shards")
            return False
        return True

    def _index_current(self, set_name: str, rows: int, fp16: bool) -> bool:
        """Whether a set's index file is intact (fast path), holds as many rows as the set, and is not
        one a float16 set filled before its rows were read back as unit vectors (index.before_unit_rows)."""
        from .index import before_unit_rows, index_paths
        from .integrity import index_problem

        meta = read_index_meta(self.sidecar, set_name)
        return (bool(meta) and int(meta.get("ntotal", -1)) == rows and not before_unit_rows(meta, fp16)
                and index_problem(index_paths(self.sidecar, set_name)[0], meta) is None)

    def _set_ids(self, set_name: str, n: int):
        """A set's ids from the catalog as one Arrow array (~the ids' bytes; read block by block, checked)."""
        import pyarrow as pa

        pool = pa.system_memory_pool()
        parts = [pa.array(block, pa.string(), memory_pool=pool) for block in self._id_blocks(set_name)]
        ids = pa.concat_arrays(parts, memory_pool=pool) if parts else pa.array([], pa.string())
        if len(ids) != n:
            raise self._damaged(f"vector set {set_name} lists {len(ids)} ids for {n} rows")
        return ids

    def _index_for(self, sl, parallel) -> dict:
        """Bring a set's FAISS index in line with its rows (`sl`: a catalog.SetLayout); its metadata."""
        metric = "inner_product" if as_str(sl.attrs.get("normalize")) == "l2" else "l2"
        unit = metric == "inner_product"  # rows read as the reader reads them (rows.unit_rows)
        add = None if parallel is None else (
            lambda ix, a, b, sl=sl: parallel.add(ix, self.shard_root, runs_between(sl, a, b), unit))
        meta = update_index(self.sidecar, sl.name, sl.ids, sl.dim, metric,
                            lambda a, b, sl=sl: read_runs(self.shard_root, runs_between(sl, a, b), unit=unit), add,
                            fp16=sl.dtype == "float16")
        if meta.get("rebuilt_because"):
            self.notes.append(f"the FAISS index of {sl.name} was {meta['rebuilt_because']}; rebuilt it")
        return meta

    def _write(self, metas, stats, index: bool, parallel) -> Layout:
        """The catalog (and indexes) from checked shard metadata."""
        layout = compute_layout(metas, self._set_attrs)
        index_meta = {}
        for name, sl in layout.sets.items():
            index_meta[name] = self._index_for(sl, parallel) if index else (read_index_meta(self.sidecar, name) or {})
        from .segments import FOLDER, retire, sweep, used

        # the head's parts start their grace before the catalog that drops them is in place (a kill
        # after the rename must not leave them looking old; a sweep keeps what the catalog uses)
        retire(self.sidecar / FOLDER, (used(self.path) if self.path.exists() else None) or [])
        write_catalog(self.path, f"{self.sidecar.name}/shards", layout, index_meta, self._created, stats)
        self.schema = SCHEMA_VERSION
        self._appender = None
        sweep(self.path, self.sidecar / FOLDER)  # a catalog written whole uses no segments
        return layout

    def up_to_date(self) -> bool:
        """Whether a refresh would only rewrite what the catalog holds: it is of this schema, lists
        exactly the shards on disk (their fingerprints checked on open), and each set's index file
        is intact (fast path), of the kind its size calls for, and holds exactly the catalog's ids
        in order. A build that committed nothing skips its final refresh then: at 2M rows that
        rewrite took ~25 s for no change."""
        from .index import before_unit_rows, ids_digest, index_kind, index_paths, read_index_meta
        from .integrity import index_problem

        if self.schema != SCHEMA_VERSION or not self.path.exists() or self._catalog_stale() or self._head_broken():
            return False
        try:
            sets = self.vector_sets()
            for vs in sets:
                meta = read_index_meta(self.sidecar, vs.name)
                if (not meta or int(meta.get("ntotal", -1)) != vs.count or meta.get("kind") != index_kind(vs.count)
                        or before_unit_rows(meta, vs.provenance.get("dtype") == "float16")
                        or vs.index.get("sha256") != meta.get("sha256")
                        or index_problem(index_paths(self.sidecar, vs.name)[0], meta) is not None):
                    return False
                with self._file() as f:
                    if ids_digest(f["vectors"][vs.name]["ids"].asstr()) != meta.get("ids_sha256"):
                        return False
        except (StoreError, OSError, KeyError, ValueError):
            return False
        return True

    # ---- reading -------------------------------------------------------------------------
    def _file(self):
        import h5py

        return h5py.File(self.path, "r")

    def items(self) -> dict[str, np.ndarray]:
        """The item table as columns (id, uri, label, split, sha256, status, reason, size, mtime_ns),
        checked against the checksum the catalog recorded for it."""
        from .shards import ItemsDigests

        try:
            with self._file() as f:
                g = f["items"]
                n = len(g["id"])
                out = {c: str_column(g, c, n) for c in ITEM_STR_COLUMNS}
                out.update({c: g[c][()] for c in ITEM_INT_COLUMNS})
                check = ItemsDigests(g.attrs, n)
        except (OSError, KeyError, ValueError, UnicodeDecodeError) as e:
            raise self._damaged(e) from None
        for c in ITEM_STR_COLUMNS:  # one join per 64k values (see shards.items_digest)
            for a in range(0, n, 1 << 16):
                check.strings(c, out[c][a : a + (1 << 16)], a)
        for c in ITEM_INT_COLUMNS:
            check.ints(out[c])
        problem = check.problem()
        if problem:
            raise self._damaged(problem)
        return out

    def item_chunks(self, columns, chunk_rows: int = 1 << 14):
        """The item table's string `columns`, `chunk_rows` rows at a time (dicts of arrays): for a pass
        over a large table in flat memory. Not checked against the table's checksum: `items()` (or
        `info()`) checks the whole table; call this after it, or for figures that tolerate damage."""
        try:
            with self._file() as f:
                g = f["items"]
                n = len(g["id"])
                for a in range(0, n, chunk_rows):
                    at = slice(a, min(n, a + chunk_rows))
                    yield {c: str_column(g, c, n, at) for c in columns}
        except (OSError, KeyError, ValueError, UnicodeDecodeError) as e:
            raise self._damaged(e) from None

    def _damaged(self, why) -> StoreError:
        why = why if isinstance(why, str) else f"{type(why).__name__}: {str(why).splitlines()[0][:120] if str(why) else ''}"
        return StoreError(f"the catalog {self.path} is damaged ({why}); run `embed verify {self.shown} --repair` "
                          "to rebuild it from the shards")

    def vector_sets(self) -> list[VectorSet]:
        try:
            return self._vector_sets()
        except (OSError, KeyError, ValueError, UnicodeDecodeError) as e:
            raise self._damaged(e) from None

    def _vector_sets(self) -> list[VectorSet]:
        with self._file() as f:
            out = []
            for name, g in f["vectors"].items():
                attrs = _decode_attrs(g.attrs)
                # build_precision is not a key field (it does not name the set), but queries run at it
                prov = {k: attrs[k] for k in (*KEY_FIELDS, "build_precision") if k in attrs}
                index = {k[len("index_") :]: v for k, v in attrs.items() if k.startswith("index_")}
                if isinstance(index.get("params"), str):
                    index["params"] = json.loads(index["params"])
                out.append(VectorSet(name, prov, int(attrs.get("count", 0)), int(attrs.get("stale_rows", 0)), attrs, index))
        return out

    def get_set(self, name: str) -> VectorSet:
        for vs in self.vector_sets():
            if vs.name == name:
                return vs
        raise StoreError(f"store {self.path} has no vector set '{name}'; it has: {', '.join(v.name for v in self.vector_sets()) or 'none'}")

    def select_set(self, which: str | None = None) -> VectorSet:
        """A set by name or encoder id; with none given, the store's only set."""
        sets = self.vector_sets()
        listing = "; ".join(f"{v.name} ({v.encoder}, {v.count} vectors)" for v in sets) or "none"
        if not sets:
            raise StoreError(f"store {self.path} has no vector sets yet; run `embed build SOURCE --store {self.shown}` first "
                             "(a build running into it makes its rows readable at its first catalog update, within "
                             "EMBEDSTORE_CATALOG_SECONDS, 30 s by default)")
        if which is None:
            if len(sets) > 1:  # e.g. after `embed finetune` re-embedded the store: the newest set, said
                # the newest of those holding the most vectors: photos added after a fine-tune (built
                # into the default encoder's set) are then found, not missing from every default read
                # among equals, a set embedstore built before an imported one (`embed import`): new
                # items and queries can be embedded for it
                newest = max(sets, key=lambda v: (str(v.attrs.get("created", "")), v.name))
                chosen = max(sets, key=default_rank)
                if chosen is newest:
                    why = f"the newest of {len(sets)}"
                elif chosen.count == newest.count:
                    why = f"built here, so new items can be embedded for it (the newest, {newest.name}, was imported)"
                else:
                    why = f"the one with the most vectors of {len(sets)} (the newest, {newest.name}, holds {newest.count})"
                chosen.note = (f"using vector set {chosen.name} ({chosen.encoder}, {chosen.count} vectors), {why}; "
                               f"pick another with --set NAME or --set ENCODER_ID: {listing}")
                return chosen
            return sets[0]
        match = [v for v in sets if which in (v.name, v.encoder)]
        if not match and which.startswith("local-dir:"):  # a fine-tuned encoder's folder, given relative to here
            here = f"local-dir:{Path(which[len('local-dir:'):]).expanduser().resolve()}"
            match = [v for v in sets if v.encoder == here]
        if len(match) == 1:
            return match[0]
        if len(match) > 1:
            raise StoreError(f"encoder {which} has {len(match)} vector sets in {self.path}; pick one by name: {listing}")
        raise StoreError(f"store {self.path} has no vector set named or made by '{which}'; it has: {listing}")

    def index(self, set_name: str):
        """(FAISS index with its tuned search parameters, index metadata); refuses one that drifted from the rows."""
        from .index import load_index

        with self._file() as f:
            ids = list(f["vectors"][set_name]["ids"].asstr()[()])
        return load_index(self.sidecar, set_name, ids)

    def rows(self, set_name: str):
        """The set's rows joined with labels, splits and uris (see `SetRows`); vectors stream on demand."""
        from .rows import set_rows

        return set_rows(self, set_name)

    def find_set(self, provenance: dict) -> VectorSet | None:
        """The set whose provenance equals `provenance` on every key field, if any."""
        for vs in self.vector_sets():
            if all(_same(vs.provenance.get(k), provenance.get(k)) for k in KEY_FIELDS):
                return vs
        return None

    def check_provenance(self, vs: VectorSet, expected: dict) -> None:
        """Refuse vectors whose provenance differs from what the caller expects."""
        diffs = provenance_diffs(vs.provenance, expected)
        if diffs:
            found, want = describe_diffs(vs.provenance, expected, diffs)
            fix = ("re-embed with that preprocessing (embed build --like a store or head made with it, or --resize-mode, "
                   "--crop-pct, --interpolation)" if diffs == ["preprocess"]
                   else "re-embed with the expected encoder")
            raise ProvenanceMismatchError(f"vector set {vs.name} was made with {found}; expected {want}. {fix[0].upper() + fix[1:]} "
                                          "or pick another set")

    def iter_vectors(self, set_name: str, chunk_rows: int = 16384, expect: dict | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Stream (ids, float32 vectors) in chunks; memory stays flat however large the set.
        `expect` (a provenance) refuses vectors made otherwise. Reads through `SetRows.stream`."""
        vs = self.get_set(set_name)
        if expect:
            self.check_provenance(vs, expect)
        rows = self.rows(set_name)  # streamed with only the ids: the other columns are never loaded
        from .rows import unit_rows

        for _start, block, meta in rows.stream(chunk_rows=chunk_rows, columns=("id",), raw=True):
            X = block.astype(np.float32)
            yield meta["id"].strings(), unit_rows(X) if rows.unit else X

    def _id_blocks(self, set_name: str, chunk_rows: int = 1 << 16):
        """The ids of the set's rows, block by block, read and checked as `SetRows.stream` reads them."""
        for _start, _block, meta in self.rows(set_name).stream(vectors=False, chunk_rows=chunk_rows, columns=("id",), raw=True):
            yield meta["id"].strings()

    def live_ids(self, set_name: str) -> set[str]:
        """The ids of the set's rows."""
        return {i for block in self._id_blocks(set_name) for i in block}

    def stored_items(self):
        """The item table column-wise and checked, with the rows of each set (store/stored.py): what a
        build's plan compares its source with, at a fraction of `items()`'s memory."""
        from .stored import StoredItems

        return StoredItems.read(self.path, self._damaged)

    def live_rows(self, set_name: str, stored) -> np.ndarray:
        """A mask over `stored`'s rows: the items that have a vector in `set_name`."""
        if not any(v.name == set_name for v in self.vector_sets()):
            return np.zeros(stored.n, dtype=bool)
        return stored.live(self._id_blocks(set_name))

    def info(self) -> dict:
        """Items, labels, splits (and their table), vector sets with provenance and index, quarantine."""
        from .describe import store_info

        return store_info(self)



def list_shards_any(shard_root: Path) -> bool:
    return shard_root.is_dir() and any(list_shards(d) for d in shard_root.iterdir() if d.is_dir())


def _set_attrs_from_shard(attrs: dict) -> dict:
    # how and when one shard was made, and its own checksums: not the set's
    skip = {"device", "precision", "committed", "set_name", "rows", "items_sha256", "vectors_sha256", "vector_ids_sha256",
            "attrs_sha256"}
    return {k: v for k, v in attrs.items() if k not in skip}


def default_rank(v: VectorSet) -> tuple:
    """How the default vector set is chosen among several (`Store.select_set`; a build without
    --encoder ranks the sets of its source's kind by it too): most vectors, then one embedstore
    built over an imported one, then the newest."""
    return (v.count, not v.encoder.startswith("external:"), str(v.attrs.get("created", "")), v.name)


def open_store(path: str | Path, mode: str = "r", create: bool = False) -> Store:
    """Open a store to read (`mode="r"`) or write (`mode="a"`; `create=True` makes a new one)."""
    if mode not in ("r", "a"):
        raise ValueError(f"mode must be 'r' or 'a', not {mode!r}")
    return Store(path, writable=(mode == "a"))._open(create=create)
