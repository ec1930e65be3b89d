"""Shard files: the unit of commit. Each is written under a temporary name and renamed into
place only when complete, so a killed writer never leaves a half shard that counts."""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import TMP_PREFIX, atomic_h5, check_free_space
from ..atomic import remove_stale_temps as remove_stale_tmp  # noqa: F401  re-exported: the store sweeps shard folders with it
from .schema import ITEM_COLUMNS, ITEM_INT_COLUMNS, ITEM_STR_COLUMNS, LATE_STR_COLUMNS

_counter = itertools.count()
# Shard file names: "<20-digit ns>-<pid>-<counter>.h5" (local writer) or "<20-digit ns>-ray-<pos>.h5" (Ray).
# Anything else in a shard folder is not ours: it is ignored with a note, never read as a shard.
SHARD_NAME = re.compile(r"^\d{20}-(\d+|ray)-\d+\.h5$")
DIGEST_ROWS = 65536  # rows hashed per read when checking a shard's vectors


def storable(s: str) -> str:
    """A string HDF5 can store as UTF-8. Undecodable file-name bytes (Python keeps them as lone
    surrogates) become `\\xNN`; callers that need the exact bytes back store `sources.stored_uri`."""
    if "\0" in s:  # HDF5 strings end at NUL: keep it visible instead
        s = s.replace("\0", "\\0")
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace") if _escapable(s) else \
            s.encode("utf-8", "backslashreplace").decode("utf-8")


def _escapable(s: str) -> bool:
    try:
        s.encode("utf-8", "surrogateescape")
        return True
    except UnicodeEncodeError:
        return False


REPEATING_COLUMNS = ("label", "split", "status", "reason", "meta")  # few distinct values over many rows


def str_column(group, name: str, n: int, at=slice(None)) -> np.ndarray:
    """String column `name` of an `items` group (`n` rows), rows `at` (a slice, or increasing
    positions), as an object array. A column added after the file was written (text, meta) reads
    as empty strings: every reader of shards and catalogs takes them this way."""
    if name in group:
        return np.asarray(group[name].asstr()[at], dtype=object)
    return np.full(len(range(n)[at]) if isinstance(at, slice) else len(at), "", dtype=object)


class ItemsDigest:
    """`items_digest` taken as the columns arrive, block by block, in ITEM_COLUMNS order (`strings`
    for each block of a string column, then `ints` for each integer column): readers that stream
    the item table check it without holding it (store/stored.py)."""

    def __init__(self):
        self.h = hashlib.sha256()
        self._late: tuple[str, object, bool] | None = None  # (column, its own hash, any value so far)

    def strings(self, column: str, block) -> None:
        """One block of a string column (every value NUL-terminated: the same bytes as one join of all)."""
        data = ("\0".join(map(str, block)) + "\0").encode("utf-8") if len(block) else b""
        if column not in LATE_STR_COLUMNS:
            self._close_late()
            self.h.update(data)
            return
        if self._late is None or self._late[0] != column:  # a late column counts only when some value is not empty
            self._close_late()
            self._late = (column, self.h.copy(), False)
        name, h, seen = self._late
        h.update(data)
        self._late = (name, h, seen or any(map(len, map(str, block))))

    def _close_late(self) -> None:
        if self._late is not None and self._late[2]:
            self.h = self._late[1]
        self._late = None

    def ints(self, col) -> None:
        self._close_late()
        self.h.update(np.asarray(col, dtype="<i8").tobytes())

    def hexdigest(self) -> str:
        self._close_late()
        return self.h.hexdigest()


class ItemsDigests:
    """The checks an item table's catalog recorded, taken as its columns arrive (column by column,
    each in blocks with its first row): one ItemsDigest per row range. A catalog written whole has
    one range (`items_sha256`); a head appended during a build one per part (`items_segments`,
    store/segments.py). `problem()` says why the table does not match (None: it does, or the
    catalog recorded no check, as before checksums)."""

    def __init__(self, attrs, n: int):
        import json

        seg = attrs.get("items_segments")
        want = attrs.get("items_sha256")
        if seg is not None:
            ends = json.loads(as_str(seg))
            self.ranges = [(int(a), int(e), str(d)) for a, (e, d) in zip([0] + [int(e) for e, _ in ends[:-1]], ends)]
        elif want is not None:
            self.ranges = [(0, n, as_str(want))]
        else:
            self.ranges = []
        self.n = n
        self.parts = [ItemsDigest() for _ in self.ranges]

    def strings(self, column: str, block, start: int) -> None:
        """Values of rows [start, start + len(block)) of a string column."""
        end = start + len(block)
        for (a, b, _), d in zip(self.ranges, self.parts):
            lo, hi = max(a, start), min(b, end)
            if lo < hi:
                d.strings(column, block[lo - start : hi - start])

    def ints(self, col) -> None:
        """A whole integer column."""
        for (a, b, _), d in zip(self.ranges, self.parts):
            d.ints(col[a:b])

    def problem(self) -> str | None:
        if self.ranges and (self.ranges[0][0] != 0 or self.ranges[-1][1] != self.n):
            return f"its item table holds {self.n} rows where its checksums cover {self.ranges[-1][1]}"
        for (a, b, want), d in zip(self.ranges, self.parts):
            if d.hexdigest() != want:
                return "its item table does not match its checksum" + (f" (rows {a}-{b - 1})" if len(self.ranges) > 1 else "")
        return None


def items_digest(cols: dict) -> str:
    """sha256 of a shard's item columns as stored (strings NUL-separated, integers little-endian int64)."""
    from .columns import objects

    d = ItemsDigest()
    for c in ITEM_STR_COLUMNS:  # one join per 64k values (fast at millions of rows; memory: one slice of one column)
        for a in range(0, len(cols[c]), 1 << 16):
            d.strings(c, objects(cols[c], a, a + (1 << 16)))
    for c in ITEM_INT_COLUMNS:
        d.ints(cols[c])
    return d.hexdigest()


ATTRS_DIGEST = "attrs_sha256"


def attrs_digest(attrs) -> str:
    """sha256 of a shard's attributes as read back from the file (every one but this checksum), as
    canonical JSON: the provenance the catalog takes from the shard is covered like its bytes."""
    import json

    vals = {str(k): (v.tolist() if hasattr(v, "tolist") else v) for k, v in attrs.items() if k != ATTRS_DIGEST}
    vals = {k: (v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else v) for k, v in vals.items()}
    return hashlib.sha256(json.dumps(vals, sort_keys=True, default=str).encode("utf-8", "surrogateescape")).hexdigest()


def vector_ids_digest(vector_ids, vector_sha256) -> str:
    """sha256 of which item each vector row belongs to: the ids, then their content hashes (NUL-terminated)."""
    h = hashlib.sha256()
    for col in (vector_ids, vector_sha256):
        if len(col):
            h.update(("\0".join(map(str, col)) + "\0").encode("utf-8"))
    return h.hexdigest()


def vectors_digest(ds, chunk_rows: int = DIGEST_ROWS) -> str:
    """sha256 of an N x D array's row-major bytes, read `chunk_rows` at a time (an array or an h5py dataset)."""
    h = hashlib.sha256()
    n = ds.shape[0]
    for s in range(0, n, chunk_rows):
        h.update(np.ascontiguousarray(ds[s : min(n, s + chunk_rows)]).tobytes())
    return h.hexdigest()


@dataclass
class ItemRows:
    """Columns of item records, appended row by row."""

    cols: dict[str, list] = field(default_factory=lambda: {c: [] for c in ITEM_COLUMNS})

    def append(self, **row) -> None:
        for c in ITEM_STR_COLUMNS:
            v = row.get(c)
            self.cols[c].append("" if v is None else storable(str(v)))
        for c in ITEM_INT_COLUMNS:
            self.cols[c].append(int(row.get(c) or 0))

    def __len__(self) -> int:
        return len(self.cols["id"])


@dataclass
class ShardMeta:
    """What the catalog needs from a shard: its item rows and which rows carry vectors."""

    name: str
    items: dict[str, np.ndarray]
    vector_ids: np.ndarray
    vector_sha256: np.ndarray
    n_vectors: int
    dim: int
    attrs: dict = field(default_factory=dict)


def commit_attrs(set_name: str, set_attrs: dict, device: str, precision: str, rows: int) -> dict:
    """A shard file's attributes: its set's provenance plus how and when this shard was made.
    Every writer (the local build's thread, Ray's write tasks) takes them from here."""
    return {**set_attrs, "device": device, "precision": precision, "rows": rows, "set_name": set_name,
            "committed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _str_dataset(group, name: str, values) -> None:
    import h5py

    group.create_dataset(name, data=np.array(values, dtype=object), dtype=h5py.string_dtype("utf-8"))


def write_shard(
    directory: Path,
    items: ItemRows,
    vector_ids: list[str],
    vector_sha256: list[str],
    vectors: np.ndarray,
    attrs: dict,
    name: str | None = None,
) -> str:
    """Write one shard atomically (temp file, fsync, rename); return its file name.

    Names sort in commit order (the latest commit of an id wins). A given `name` replaces a shard
    of that name whole: a retried Ray task rewrites its shard rather than adding a second copy."""
    directory.mkdir(parents=True, exist_ok=True)
    vectors = np.ascontiguousarray(vectors)
    # checksums of what the shard holds, recorded with it: `check_shard` and `embed verify` recompute them
    attrs = {**attrs, "items_sha256": items_digest(items.cols), "vectors_sha256": vectors_digest(vectors),
             "vector_ids_sha256": vector_ids_digest(vector_ids, vector_sha256)}
    name = name or f"{time.time_ns():020d}-{os.getpid()}-{next(_counter):06d}.h5"
    check_free_space(directory, 2 * vectors.nbytes + 512 * len(items) + (64 << 10))
    with atomic_h5(directory / name) as f:
        for k, v in attrs.items():
            f.attrs[k] = v
        f.attrs[ATTRS_DIGEST] = attrs_digest(f.attrs)  # of the values as a reader gets them back
        g = f.create_group("items")
        for c in ITEM_STR_COLUMNS:
            _str_dataset(g, c, items.cols[c])
        for c in ITEM_INT_COLUMNS:
            g.create_dataset(c, data=np.asarray(items.cols[c], dtype=np.int64))
        _str_dataset(f, "vector_ids", vector_ids)
        _str_dataset(f, "vector_sha256", vector_sha256)
        n, d = vectors.shape
        chunk_rows = max(1, min(n, (1 << 20) // max(1, d * vectors.dtype.itemsize)))
        f.create_dataset("vectors", data=vectors, chunks=(chunk_rows, d) if n else None)
    return name


def read_shard_meta(path: Path, compact: bool = False) -> ShardMeta:
    """A shard's item rows and vector ids; with `compact` its string columns as Arrow arrays, and
    the long ones (columns.LAZY_COLUMNS) as `ShardColumn`s read again when used (what the catalog
    refresh keeps for every shard: see store/columns.py), else as object arrays."""
    import h5py

    from .columns import LAZY_COLUMNS, ShardColumn, arrow
    from .integrity import shard_stat

    stat = shard_stat(path) if compact else None
    with h5py.File(path, "r") as f:
        g = f["items"]
        n = len(g["id"])
        skip = [c for c in LAZY_COLUMNS if c != "sha256"] if compact else []  # sha256: compared with the vectors' below
        items = {c: str_column(g, c, n) for c in ITEM_STR_COLUMNS if c not in skip}
        if compact:
            items = {c: arrow(v) for c, v in items.items()}
        else:
            for c in REPEATING_COLUMNS:  # one object per distinct value
                seen: dict = {}
                items[c] = np.array([seen.setdefault(v, v) for v in items[c]], dtype=object).reshape(n)
        items.update({c: g[c][()] for c in ITEM_INT_COLUMNS})
        n, d = f["vectors"].shape
        vids, vshas = f["vector_ids"].asstr()[()], f["vector_sha256"].asstr()[()]
        if compact:
            vids, vshas = arrow(vids), arrow(vshas)
        vids, vshas = _shared(vids, items["id"]), _shared(vshas, items["sha256"])
        if compact:
            lazy = {c: ShardColumn(path, c, len(items["id"]), stat) for c in LAZY_COLUMNS}
            if vshas is items["sha256"]:
                vshas = lazy["sha256"]
            items.update(lazy)
            items = {c: items[c] for c in ITEM_COLUMNS}
        return ShardMeta(
            name=path.name,
            items=items,
            vector_ids=vids,
            vector_sha256=vshas,
            n_vectors=int(n),
            dim=int(d),
            attrs={k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()},
        )


def _shared(vals: np.ndarray, same: np.ndarray) -> np.ndarray:
    """`same` when it holds the same values as `vals` (a shard whose items all have vectors, the
    usual case): the catalog refresh keeps every shard's columns, and this stores those strings once."""
    from .columns import is_arrow

    if len(vals) != len(same):
        return vals
    return same if (vals.equals(same) if is_arrow(vals) else np.array_equal(vals, same)) else vals


def list_shards(directory: Path) -> list[str]:
    """The shard files in a set's folder, in commit order (files not named like shards are left out)."""
    if not directory.is_dir():
        return []
    return sorted(n for n in os.listdir(directory) if SHARD_NAME.match(n))


def stray_files(directory: Path) -> list[str]:
    """Files in a shard folder that are neither shards nor temporaries (ignored, with a note)."""
    if not directory.is_dir():
        return []
    return sorted(n for n in os.listdir(directory) if not SHARD_NAME.match(n) and not n.startswith(TMP_PREFIX))


def check_shard(path: Path) -> str | None:
    """Why the shard at `path` cannot be trusted (None when it is intact): it must open, hold the
    shard layout, and hash to the checksums recorded at commit. Reads every byte of its rows.
    Shards written before checksums existed are checked for structure and finite vectors only."""
    import h5py

    try:
        size = path.stat().st_size
        if size == 0:
            return "empty file (0 bytes)"
        with h5py.File(path, "r") as f:
            attrs = dict(f.attrs.items())  # every attribute must read, and match its checksum where one was recorded
            want_attrs = attrs.get(ATTRS_DIGEST)  # shards written before it lack it
            if want_attrs is not None and attrs_digest(attrs) != as_str(want_attrs):
                return "attributes (the set's provenance) do not match their checksum"
            lacking = [k for k in CHECKSUM_ATTRS if k not in attrs]
            if lacking and _int(attrs.get("schema_version")) >= CHECKSUMS_ALWAYS_FROM:
                # else deleting a checksum would pass off an edit made with it as a shard from before checksums
                return f"no {lacking[0]}, which every shard of store schema {CHECKSUMS_ALWAYS_FROM} or later carries"
            for key in ("items", "vectors", "vector_ids", "vector_sha256"):
                if key not in f:
                    return f"not a complete shard (no '{key}')"
            g = f["items"]
            n = len(g["id"])
            cols = {c: str_column(g, c, n) for c in ITEM_STR_COLUMNS}
            cols.update({c: g[c][()] for c in ITEM_INT_COLUMNS})
            if any(len(v) != n for v in cols.values()):
                return "item columns of different lengths"
            ds = f["vectors"]
            if ds.shape[0] != len(f["vector_ids"]):
                return f"{ds.shape[0]} vectors but {len(f['vector_ids'])} vector ids"
            want_items, want_vecs = f.attrs.get("items_sha256"), f.attrs.get("vectors_sha256")
            if want_items is not None and items_digest(cols) != as_str(want_items):
                return "item rows do not match their checksum"
            vids, vshas = f["vector_ids"].asstr()[()], f["vector_sha256"].asstr()[()]
            if len(vshas) != len(vids):
                return f"{len(vids)} vector ids but {len(vshas)} vector hashes"
            want_ids = f.attrs.get("vector_ids_sha256")  # shards written before it existed lack it
            if want_ids is not None and vector_ids_digest(vids, vshas) != as_str(want_ids):
                return "vector ids do not match their checksum"
            if want_vecs is not None:
                if vectors_digest(ds) != as_str(want_vecs):
                    return "vector bytes do not match their checksum"
            else:
                for s in range(0, ds.shape[0], DIGEST_ROWS):
                    if not np.isfinite(ds[s : s + DIGEST_ROWS].astype(np.float32)).all():
                        return "non-finite vectors (no checksum recorded: written before checksums)"
    except (OSError, KeyError, ValueError, TypeError, RuntimeError, UnicodeDecodeError) as e:  # RuntimeError: h5py's word for some HDF5 failures
        return f"unreadable ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else 'no detail'})"
    return None


# The checksums a shard records at commit; shards of store schema CHECKSUMS_ALWAYS_FROM or later
# (the set attribute schema_version) always carry all of them.
CHECKSUM_ATTRS = ("vectors_sha256", "items_sha256", "vector_ids_sha256", ATTRS_DIGEST)
CHECKSUMS_ALWAYS_FROM = 4


def _int(v) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return 0


def has_checksums(path: Path) -> bool:
    import h5py

    with h5py.File(path, "r") as f:
        return "vectors_sha256" in f.attrs


def as_str(v) -> str:
    """An HDF5 string attribute or value as str (h5py gives bytes or str by how it was written)."""
    return v.decode() if isinstance(v, bytes) else str(v)
