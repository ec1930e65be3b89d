"""Proving a store intact: every shard against the checksums recorded when it was committed, the
FAISS index against its recorded sha256, the catalog against the shards, and the provenance of
every vector set. `verify_store` reports; `repair_store` does what can be done without the source."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from ..atomic import TMP_PREFIX, fsync_dir
from .shards import as_str

# The row-aligned metadata of a vector set (its ids, and the item columns at each row's item), hashed
# block by block: a streaming reader checks each block it reads without reading the rest.
ROW_COLUMNS = ("id", "label", "split", "uri", "text", "sha256", "meta")
ROW_BLOCK = 65536


def row_columns_of(digests_shape) -> tuple[str, ...] | None:
    """The row columns a catalog's `row_sha256` (blocks x (columns + 1)) covers: schema 3 all of
    ROW_COLUMNS, schema 2 all but `meta`; None when the width fits neither."""
    k = int(digests_shape[1]) - 1 if len(digests_shape) == 2 else -1
    return ROW_COLUMNS[:k] if k in (len(ROW_COLUMNS) - 1, len(ROW_COLUMNS)) else None


def column_digest(vals) -> str:
    """sha256 of one block of one row column: its values (UTF-8 bytes or str) NUL-terminated, or an
    integer column's little-endian int64 bytes. `row_sha256[block, k]` in the catalog is the digest
    of ROW_COLUMNS[k] for k < len(ROW_COLUMNS), then of the block's `item_row`."""
    if isinstance(vals, np.ndarray) and vals.dtype.kind in "iu":
        return hashlib.sha256(np.asarray(vals, dtype="<i8").tobytes()).hexdigest()
    return hashlib.sha256(joined_text(vals)).hexdigest()


def joined_text(vals) -> bytes:
    """String values as one run of bytes: each UTF-8 and NUL-terminated (what `column_digest` hashes
    and what a catalog's row text stores, store/rowtext.py)."""
    if not len(vals):
        return b""
    if isinstance(vals[0], bytes):
        return b"\0".join(vals) + b"\0"
    return ("\0".join(map(str, vals)) + "\0").encode("utf-8")


def all_finite(block: np.ndarray, step: int = 1 << 17) -> bool:
    """No NaN or inf in `block` (float16 by its exponent bits: numpy's float16 isfinite is slow).
    Checked `step` values at a time through one small buffer: a temporary the size of the block
    costs page faults and memory traffic that take longer than the check."""
    if block.dtype != np.float16:
        return bool(np.isfinite(block).all())
    u = block.reshape(-1).view(np.uint16)
    buf = np.empty(min(len(u), step), dtype=np.uint16)
    for i in range(0, len(u), step):
        seg = u[i : i + step]
        out = buf[: len(seg)]
        np.bitwise_and(seg, 0x7C00, out=out)
        if int(out.max()) == 0x7C00:
            return False
    return True


def row_map_digest(runs) -> str:
    """sha256 of a row-to-shard map: (first row, end row, shard file, dataset, first shard row,
    end shard row) per piece, in row order; what a virtual dataset's mapping says, or what the
    catalog writer meant it to say."""
    h = hashlib.sha256()
    for piece in runs:
        h.update(("\t".join(map(str, piece)) + "\n").encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def vds_row_map(ds) -> list[tuple]:
    """The row-to-shard map a virtual dataset actually holds (read from its HDF5 mapping)."""
    if not ds.is_virtual:
        return []
    out = []
    for m in ds.virtual_sources():
        (v0, _), (v1, _) = m.vspace.get_select_bounds()
        (s0, _), (s1, _) = m.src_space.get_select_bounds()
        out.append((int(v0), int(v1) + 1, m.file_name, m.dset_name, int(s0), int(s1) + 1))
    out.sort()
    return out


def shard_stat(path: Path) -> tuple[int, int]:
    """(size, mtime_ns): the fast-path fingerprint a catalog records for a checked shard."""
    try:
        st = path.stat()
    except OSError:
        return (-2, -2)
    return (int(st.st_size), int(st.st_mtime_ns))


def move_aside(sidecar: Path, shard_root: Path, key: str) -> Path:
    """Move a damaged shard to `<store>.d/damaged/<set>/` (kept for inspection, never read again)."""
    src = shard_root / key
    dest = sidecar / "damaged" / key
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dest)
    fsync_dir(src.parent)
    return dest


def index_problem(index_path: Path, meta: dict | None, full: bool = False) -> str | None:
    """Why an index file does not match what its metadata recorded (None when it does). The fast
    path compares size and mtime; `full` (or a changed mtime) re-hashes the file."""
    from ..atomic import file_sha256

    if not meta:
        return "missing its metadata"
    if not index_path.is_file():
        return "missing"
    st = index_path.stat()
    if "size" in meta and st.st_size != meta["size"]:
        return f"damaged ({st.st_size} bytes; {meta['size']} were written)"
    if "sha256" in meta and (full or st.st_mtime_ns != meta.get("mtime_ns")) and file_sha256(index_path) != meta["sha256"]:
        return "damaged (its bytes do not match the sha256 recorded when it was written)"
    return None


def verify_store(path: str | Path) -> dict:
    """Check everything in full; return {"ok", "problems": [...], "checked": {...}, "notes": [...]}.
    Each problem is {"what", "path", "problem", "fix"}. Opens nothing for writing."""
    import h5py

    from .catalog import compute_layout
    from .columns import values
    from .index import before_unit_rows, ids_digest, index_paths, read_index_meta
    from .schema import ITEM_COLUMNS, ITEM_STR_COLUMNS, KEY_FIELDS, LATE_STR_COLUMNS, SCHEMA_VERSION, renamed_from, sidecar_dir
    from .shards import check_shard, has_checksums, list_shards, read_shard_meta, stray_files
    from .store import _set_attrs_from_shard, check_store_file

    name = str(path)  # as given: the fixes it prints work from where it was run
    path = Path(path).resolve()
    sidecar = sidecar_dir(path)
    shard_root = sidecar / "shards"
    if path.exists() and not sidecar.exists():  # no data folder and a file that is not a catalog: not a store at all
        from .store import check_store_file

        check_store_file(path)
    problems, notes = [], []
    missing_shards: list[str] = []  # listed by the catalog, not on disk: their rows exist nowhere else
    checked = {"shards": 0, "shards_without_checksums": 0, "rows": 0, "indexes": 0}
    aside = sorted((sidecar / "damaged").rglob("*.h5")) if (sidecar / "damaged").is_dir() else []
    if aside:
        notes.append(f"{len(aside)} shard(s) moved aside by `embed verify --repair` lie in {sidecar.name}/damaged, never "
                     f"read: their items are in the store again only once `embed build SOURCE --store {name}` has "
                     "re-embedded them; after that the folder can be deleted")

    def bad(what, p, problem, fix):
        problems.append({"what": what, "path": str(p), "problem": problem, "fix": fix})

    set_dirs = sorted(d for d in shard_root.iterdir() if d.is_dir()) if shard_root.is_dir() else []
    metas, set_attrs, damaged = [], {}, set()
    encoders: dict[str, str] = {}  # set -> encoder id, for the fix of a damaged shard
    for d in set_dirs:
        for f in stray_files(d):
            notes.append(f"ignored {d / f}: not a shard")
        for f in os.listdir(d):
            if f.startswith(TMP_PREFIX):
                notes.append(f"temporary file {d / f} (removed by the next writer if its process is gone)")
        for n in list_shards(d):
            key = f"{d.name}/{n}"
            checked["shards"] += 1
            problem = check_shard(d / n)
            if problem is None:
                try:  # what the checks above did not read can still be damaged (HDF5 object headers)
                    old = not has_checksums(d / n)
                    meta = read_shard_meta(d / n)
                except Exception as e:  # noqa: BLE001 - any failure to read a shard is a finding, not a crash
                    problem = f"unreadable ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else 'no detail'})"
            if problem:
                damaged.add(key)
                bad("shard", d / n, problem, f"`embed verify {name} --repair` moves it aside; `embed build SOURCE --store {name}` re-embeds its items")
                continue
            if old:
                checked["shards_without_checksums"] += 1
            checked["rows"] += len(meta.items["id"])
            metas.append((d.name, meta))
            a = _set_attrs_from_shard(meta.attrs)
            if d.name not in set_attrs:
                set_attrs[d.name] = a
                misnamed, note = _name_check(d.name, a)
                if misnamed:
                    bad("provenance", d / n, misnamed, "the shard was made by another encoder setup: move it out and "
                        + ("import the vectors again" if a.get("external") else "rebuild"))
                notes += [note] if note else []
            elif str(meta.attrs.get("set_name", d.name)) != d.name:
                bad("provenance", d / n, f"shard belongs to set {meta.attrs.get('set_name')}, not {d.name}",
                    "move it to its own set's folder or delete it, then `embed build`")
    if checked["shards_without_checksums"]:
        notes.append(f"{checked['shards_without_checksums']} shard(s) were written before checksums: checked for structure "
                     "and finite vectors only")

    # the catalog against the shards
    layout = compute_layout(metas, set_attrs) if metas or not path.exists() else None
    catalog_ids, copied_from = {}, None
    if not path.exists():
        if metas:
            bad("catalog", path, "missing", f"`embed verify {name} --repair` rebuilds it from the shards")
    else:
        try:
            check_store_file(path)
            with h5py.File(path, "r") as f:
                listed = set(f["shards"].asstr()[()]) if "shards" in f else set()
                for sname, g in f["vectors"].items():
                    catalog_ids[sname] = list(g["ids"].asstr()[()])
                    encoders.setdefault(sname, as_str(g.attrs.get("encoder", "")))  # a set whose every shard is damaged
                    missing = sorted(set(KEY_FIELDS) - set(g.attrs) - {"modality"})
                    if missing:
                        bad("provenance", path, f"vector set {sname} lacks provenance fields: {', '.join(missing)}",
                            "re-embed into a new store with `embed build`")
                shard_dir = f.attrs.get("shard_dir")
                from .segments import is_head, parts_of

                copied = shard_dir != f"{sidecar.name}/shards" and _copied_from(shard_dir)
                if is_head(f) and sidecar.exists():
                    notes.append(f"builds appended to the catalog: its rows are read through {len(parts_of(f))} "
                                 f"file(s) in {sidecar.name}/catalog" + ("" if copied else " (checked with it)"))
            present = {f"{d}/{m.name}" for d, m in metas}
            gone = sorted(listed - present - damaged)  # a damaged shard is reported once, as itself
            missing_shards.extend(gone)
            moved = renamed_from(path)
            if moved is not None:  # the whole data folder, under the file's old name
                from .schema import without_folder

                how, fix = without_folder(path, moved)
                bad("store", sidecar, f"its data folder is {moved.name} beside it, not {sidecar.name} ({how})", fix)
            elif gone and not sidecar.exists():  # the whole data folder: said as such, not shard by shard
                bad("store", sidecar, f"its data folder {sidecar.name} is missing (a store is {path.name} and "
                    f"{sidecar.name}: copy both)",
                    f"restore {sidecar.name} beside {path.name}, or `embed build SOURCE --store {name}` to re-embed the items")
            elif gone:
                bad("catalog", path, f"lists {len(gone)} shard(s) that are missing or damaged (e.g. {gone[0]})",
                    f"`embed build SOURCE --store {name}` rebuilds the catalog and re-embeds their items")
            elif listed - damaged != present:
                bad("catalog", path, f"does not list {len(present - listed)} committed shard(s)",
                    f"`embed verify {name} --repair` (or any writer) rebuilds it")
            elif shard_dir != f"{sidecar.name}/shards" and not _copied_from(shard_dir):
                bad("catalog", path, f"points at {shard_dir}, not {sidecar.name}/shards",
                    f"`embed verify {name} --repair` rebuilds it")
            elif copied:
                copied_from = as_str(shard_dir)
                # A copied or renamed store (S.h5 + S.h5.d copied together, as the README says) is not damaged: its
                # catalog is derived from its shards, checked above, and every command that opens the store rewrites
                # it first. Its row tables are not checked here: HDF5 would read them through the original's files.
                notes.append(f"the catalog still names {shard_dir}, the folder of the store this one was copied or renamed "
                             f"from; the next command that opens {name} rebuilds it from this store's shards (checked "
                             f"above), or `embed verify {name} --repair` now")
            elif layout is not None and not damaged:
                for sname, sl in layout.sets.items():
                    if catalog_ids.get(sname) != list(values(sl.ids)):
                        bad("catalog", path, f"vector set {sname}: its rows differ from what the shards hold",
                            f"`embed verify {name} --repair` rebuilds it")
                with h5py.File(path, "r") as f:  # the item table, cell by cell, against the shards'
                    g = f["items"]
                    for c in ITEM_COLUMNS:
                        have = (g[c].asstr()[()] if c in ITEM_STR_COLUMNS else g[c][()]) if c in g else None
                        if have is None and c in LATE_STR_COLUMNS:  # an older catalog: read as empty
                            have = [""] * len(g["id"])
                        if have is None or list(have) != list(values(layout.items[c])):
                            bad("catalog", path, f"its item column '{c}' differs from what the shards hold",
                                f"`embed verify {name} --repair` rebuilds it")
                            break
                    for sname, sl in layout.sets.items():  # each set's row tables and row-to-shard map
                        problem = _row_tables_problem(f, sname, sl, layout, f"{sidecar.name}/shards")
                        if problem:
                            bad("catalog", path, f"vector set {sname}: {problem}", f"`embed verify {name} --repair` rebuilds it")
                    if int(f.attrs.get("embedstore_schema", 0)) < SCHEMA_VERSION:
                        notes.append(f"the catalog has store schema {int(f.attrs['embedstore_schema'])}; the next writer "
                                     f"(`embed build`, `embed verify --repair`) upgrades it to {SCHEMA_VERSION}")
        except Exception as e:  # noqa: BLE001 - any failure to read the catalog is a finding, not a crash
            bad("catalog", path, f"unreadable ({str(e).splitlines()[0][:160] if str(e) else type(e).__name__})",
                f"`embed verify {name} --repair` rebuilds it from the shards")

    # each index against its checksum and the set's rows
    for sname in sorted(set(catalog_ids) | (set(layout.sets) if layout else set())):
        ipath, _ = index_paths(sidecar, sname)
        meta = read_index_meta(sidecar, sname)
        if meta is None and not ipath.exists():
            notes.append(f"vector set {sname} has no FAISS index yet (built by the next `embed build`)")
            continue
        checked["indexes"] += 1
        problem = index_problem(ipath, meta, full=True)
        ids = catalog_ids.get(sname) if damaged or not layout or sname not in layout.sets else layout.sets[sname].ids
        if problem is None and meta.get("ids_sha256") != ids_digest(ids):
            problem = "stale (its rows are not the set's rows)"
        if problem is None and "sha256" not in meta:
            notes.append(f"index of {sname} was written before checksums: size and rows checked only")
        if problem is None and before_unit_rows(meta, as_str(set_attrs.get(sname, {}).get("dtype", "")) == "float16"):
            notes.append(f"the index of {sname} was built before float16 rows were read back as unit vectors: searches "
                         f"scan exactly instead until `embed verify {name} --repair` (or the next `embed build`) rebuilds it")
        if problem:
            bad("index", ipath, problem, f"`embed verify {name} --repair` or the next `embed build` rebuilds it")
    encoders.update({s: as_str(a["encoder"]) for s, a in set_attrs.items() if a.get("encoder")})
    if len(encoders) > 1:  # a build given no options re-embeds into the default set: say which set needs what
        for p in problems:
            if p["what"] == "shard":
                s = Path(p["path"]).parent.name
                p["fix"] += (f" (into vector set {s}, made by {encoders.get(s, 'its encoder')}, when that is the store's default "
                             f"set; else with the options it was made with, as `embed info {name}` lists them)")
    return {"store": str(path), "ok": not problems, "problems": problems, "checked": checked, "notes": notes,
            "missing_shards": missing_shards, "set_encoders": encoders, "copied_from": copied_from}


def _copied_from(shard_dir) -> bool:
    """Whether a catalog's shard_dir names another store's folder beside it (NAME.h5.d/shards): a store copied or
    renamed whole."""
    parts = as_str(shard_dir).split("/")
    return len(parts) == 2 and parts[0].endswith(".d") and parts[1] == "shards" and parts[0] not in ("", ".d")


def _name_check(name: str, attrs: dict) -> tuple[str | None, str | None]:
    """(problem, note): why a set's folder `name` is not the name its shard's provenance `attrs`
    give, and a note for an imported set named as `embed import` named its sets before it used
    `set_name_for` (not damage: its provenance gives that name too). Shards from before every key
    field was recorded are not checked."""
    from .schema import KEY_FIELDS, early_import_set_name, set_name_for

    if not all(k in attrs for k in KEY_FIELDS):
        return None, None
    want = set_name_for(attrs)
    if name == want:
        return None, None
    if bool(attrs.get("external")) and name == early_import_set_name(attrs):
        return None, (f"vector set {name} was named by an earlier `embed import`, which hashed its provenance differently "
                      f"(now it would be {want}); its provenance gives that earlier name, so it is intact")
    return f"the provenance recorded in the shard names the set {want}, not {name}", None


def _row_tables_problem(f, sname: str, sl, layout, shard_root_rel: str) -> str | None:
    """How a set's row tables in the open catalog `f` differ from what the shards give (None: they
    match). Schema 1 catalogs have none to check."""
    from .catalog import row_tables
    from .schema import ITEM_STR_COLUMNS

    g = f["vectors"][sname]
    if "item_row" not in g:
        return None
    from .catalog import _indexable

    str_cols = {c: _indexable(layout.items[c]) for c in ITEM_STR_COLUMNS}
    columns = row_columns_of(g["row_sha256"].shape) or ROW_COLUMNS  # a schema 2 catalog's, without meta
    if int(f.attrs.get("embedstore_schema", 0)) >= 3:
        columns = ROW_COLUMNS  # schema 3 checksums every row column: a narrower table differs below
    _ids, at, digests, pieces = row_tables(sl, str_cols, shard_root_rel, columns)
    if not np.array_equal(g["item_row"][()], at):
        return "its row-to-item map (item_row) differs from what the shards hold"
    if g["row_sha256"].shape != digests.shape or not np.array_equal(g["row_sha256"][()], digests):
        return "its row checksums (row_sha256) differ from what the shards hold"
    if vds_row_map(g["vectors"]) != pieces:
        return "its row-to-shard map differs from what the shards hold"
    if as_str(g.attrs.get("row_map_sha256", "")) != row_map_digest(pieces):
        return "its row-to-shard map checksum (row_map_sha256) is not the map's"
    if int(f.attrs.get("embedstore_schema", 0)) >= 4:
        return _row_text_problem(g, digests, len(sl.ids))
    return None


def _row_text_problem(g, digests: np.ndarray, n: int) -> str | None:
    """How a set's row text (schema 4, store/rowtext.py) differs from the row checksums the shards give."""
    from . import rowtext

    text = g.get(rowtext.GROUP)
    why = rowtext.problem(text, ROW_COLUMNS, n, digests.shape[0])
    if why or text is None:
        return why
    starts = text["block_start"][()]
    for k in range(digests.shape[0]):
        rows = min(ROW_BLOCK, n - k * ROW_BLOCK)
        for ci, c in enumerate(ROW_COLUMNS):
            got = rowtext.read_block(text, c, k, starts, ci, rows, as_str(digests[k, ci]))
            if isinstance(got, str):
                return got
    if any(int(starts[-1, ci]) != len(text[c]) for ci, c in enumerate(ROW_COLUMNS)):
        return "its row text holds bytes past its last block"
    return None



def repair_store(path: str | Path) -> dict:
    """Do what can be done without the source: move damaged shards aside, remove leftover
    temporaries, rebuild the catalog and any damaged or stale index. Returns what verify then says,
    plus "repaired" (what was done) and "needs_source" (items only a build can re-embed)."""
    from .schema import sidecar_dir
    from .store import open_store

    from ..errors import StoreError

    given, path = path, Path(path).resolve()
    sidecar = sidecar_dir(path)
    before = verify_store(given)
    gone = before.get("missing_shards") or []
    if gone:  # rebuilding the catalog from the shards there are would drop these shards' items and their labels
        from .schema import missing_shards_reason, renamed_from

        where = missing_shards_reason(path, gone, str(given))
        if renamed_from(path) is not None:  # renamed without its folder: the fix is the rename alone
            raise StoreError(f"not repaired: {where}")
        raise StoreError(f"not repaired: {where}; a repair would drop their items. Restore the missing files, or re-embed "
                         f"them with `embed build SOURCE --store {given}`")
    done, needs_source = [], []
    with open_store(path, mode="a") as st:  # takes the writer lock before anything moves
        for p in before["problems"]:
            f = Path(p["path"])
            if p["what"] == "shard" and f.exists():
                key = f"{f.parent.name}/{f.name}"
                dest = move_aside(sidecar, sidecar / "shards", key)
                st._meta_cache.pop(key, None)
                st._trusted.pop(key, None)
                done.append(f"moved damaged shard {key} to {dest}")
                needs_source.append(key)
            elif p["what"] == "index" and f.exists():
                f.unlink()  # rebuilt below from the shards
                done.append(f"removed damaged index {f.name}")
        st.refresh(index=True)
        done.extend(st.notes)
        catalog = [p for p in before["problems"] if p["what"] == "catalog"]
        if catalog and not any("catalog" in d for d in done):  # rewritten whole by the refresh above: say so
            done.append(f"rebuilt the catalog {path.name} from the shards (verify found: {catalog[0]['problem']})")
        elif before.get("copied_from") and not any("catalog" in d for d in done):
            done.append(f"rebuilt the catalog {path.name} from the shards (it named {before['copied_from']}, the folder of "
                        "the store this one was copied or renamed from)")
        needs_source += [n for n in st.notes if "re-embedded" in n]
    after = verify_store(given)
    after["repaired"] = done
    after["needs_source"] = needs_source
    after["needs_sets"] = sorted({Path(p["path"]).parent.name for p in before["problems"] if p["what"] == "shard"})
    return after
