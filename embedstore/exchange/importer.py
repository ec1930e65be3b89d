"""`import_folder`: vectors made elsewhere (an `embed export`, clip-retrieval's `img_emb/*.npy` +
`metadata/*.parquet`, or parquet files with an `embedding` column) -> a vector set whose
provenance says it is external, so heads, detectors and search (by id or vector) run on it."""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import SourceError
from ..sources.items import metadata_string

EMB_DIRS = ("emb", "img_emb", "text_emb")
ID_COLUMNS = ("id", "image_path", "url", "path", "key")
URI_COLUMNS = ("uri", "image_path", "url", "path")
CONTENT_COLUMN = "sha256"  # each item's content hash, as `embed export` (and img2dataset) write it
HEX_DIGEST = re.compile(r"[0-9a-f]{64}")


@dataclass
class ImportReport:
    source: str
    store: str
    vector_set: str
    layout: str  # npy+parquet | parquet
    rows: int
    dim: int
    dtype: str
    normalize: str
    seconds: float
    notes: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _parts(src: Path) -> tuple[str, list[tuple[Path, Path | None]]]:
    if not src.exists():
        raise SourceError(f"{src} does not exist; give the folder `embed export` (or clip-retrieval) wrote: emb/*.npy with "
                          "metadata/*.parquet")
    if not src.is_dir():
        raise SourceError(f"{src} is not a folder; import reads a folder with emb/*.npy and metadata/*.parquet (as `embed export` writes)")
    for d in EMB_DIRS:
        npys = sorted((src / d).glob("*.npy"))
        if npys:
            metas = sorted((src / "metadata").glob("*.parquet"))
            if len(metas) != len(npys):
                raise SourceError(f"{src}: {len(npys)} .npy file(s) in {d}/ but {len(metas)} .parquet file(s) in metadata/; "
                                  "they must pair up in order")
            return "npy+parquet", list(zip(npys, metas))
        pqs = sorted((src / d).glob("*.parquet"))
        if pqs:
            return "parquet", [(p, None) for p in pqs]
    raise SourceError(f"{src} holds no vectors: expected emb/*.npy with metadata/*.parquet, or emb/*.parquet with an embedding column")


def _unreadable(path: Path, why) -> SourceError:
    return SourceError(f"{path} is truncated or unreadable ({str(why).splitlines()[0] if str(why) else type(why).__name__}); "
                       "export it again (`embed export STORE --out NEW_FOLDER`) and import the new folder")


def _read_errors() -> tuple:
    """What numpy and pyarrow raise on a file cut short or not of its format (pyarrow's ArrowInvalid is a
    ValueError, its IO errors OSErrors; the rest derive from ArrowException)."""
    import pyarrow as pa

    return (ValueError, OSError, EOFError, pa.ArrowException)


def _npy(path: Path):
    """An .npy file's array, memory-mapped; one cut short, or not an .npy, is a SourceError naming it."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise _unreadable(path, _npy_shortfall(path) or e) from None


def _npy_shortfall(path: Path) -> str | None:
    """'N bytes where its header says M' for an .npy whose header reads but whose data is cut short
    ('an empty file' for 0 bytes); None when that is not what is wrong."""
    fmt = np.lib.format
    if path.is_file() and path.stat().st_size == 0:
        return "an empty file"
    try:
        with open(path, "rb") as f:
            version = fmt.read_magic(f)
            shape, _, dtype = (fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0)(f)
            start = f.tell()
    except (ValueError, OSError, EOFError):
        return None
    need, have = start + int(np.prod(shape)) * dtype.itemsize, path.stat().st_size
    return f"{have} bytes where its header says {need}: {' x '.join(map(str, shape))} {dtype}" if have < need else None


def _parquet(path: Path):
    """A pyarrow ParquetFile; one cut short (its footer gone), or not Parquet, is a SourceError naming it."""
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except _read_errors() as e:
        raise _unreadable(path, e) from None


def _check_parts(parts: list[tuple[Path, Path | None]]) -> None:
    """Open every file's header before the store is opened: a part cut short, unreadable or not matching
    its pair is refused before any vector is committed."""
    for emb, meta in parts:
        if meta is None:
            names = _parquet(emb).schema_arrow.names
            if "embedding" not in names:
                raise SourceError(f"{emb} has no 'embedding' column (columns: {', '.join(names)})")
            continue
        n, rows = len(_npy(emb)), _parquet(meta).metadata.num_rows
        if n != rows:
            raise SourceError(f"{emb.name} has {n} vectors but {meta.name} has {rows} rows")


def _read_part(emb: Path, meta: Path | None, chunk: int = 65536):
    """Yield (metadata dict of columns, vectors) in chunks; a file that fails as it is read (its header
    read well) is a SourceError naming it."""
    if meta is not None:
        X = _npy(emb)
        try:
            t = _parquet(meta).read()
        except _read_errors() as e:
            raise _unreadable(meta, e) from None
        if t.num_rows != len(X):
            raise SourceError(f"{emb.name} has {len(X)} vectors but {meta.name} has {t.num_rows} rows")
        cols = t.to_pydict()
        for s in range(0, len(X), chunk):
            yield {k: v[s : s + chunk] for k, v in cols.items()}, np.asarray(X[s : s + chunk])
        return
    batches = _parquet(emb).iter_batches(batch_size=chunk)  # its 'embedding' column checked by _check_parts
    while True:
        try:
            b = next(batches, None)
        except _read_errors() as e:
            raise _unreadable(emb, e) from None
        if b is None:
            return
        cols = b.to_pydict()
        X = np.asarray(cols.pop("embedding"), dtype=np.float32)
        yield cols, X


def _stored_dtype(layout: str, emb: Path) -> str:
    """float16 when the export holds float16 vectors (an .npy of float16, or an embedding column of
    half floats), else float32: an import keeps the size the vectors were exported at."""
    if layout == "npy+parquet":
        return "float16" if _npy(emb).dtype == np.float16 else "float32"
    import pyarrow as pa

    kind = _parquet(emb).schema_arrow.field("embedding").type
    return "float16" if getattr(kind, "value_type", None) == pa.float16() else "float32"


def _first(cols: dict, names) -> str | None:
    """The first of `names` that is a column (the one `_pick` takes)."""
    return next((c for c in names if c in cols), None)


def _pick(cols: dict, names, n: int, default=None):
    for c in names:
        if c in cols:
            return [("" if v is None else str(v)) for v in cols[c]]
    return default if default is not None else [""] * n


def _content_hashes(cols: dict, m: int, part: str) -> list[str]:
    """Each row's content hash from the `sha256` column ("" for a row without one, or no column)."""
    if CONTENT_COLUMN not in cols:
        return [""] * m
    vals = [v.lower() for v in _pick(cols, (CONTENT_COLUMN,), m)]
    odd = next((v for v in vals if v and not HEX_DIGEST.fullmatch(v)), None)
    if odd is not None:
        raise SourceError(f"{part}: a '{CONTENT_COLUMN}' cell is not a sha256 hex digest ({odd[:70]!r}); that column holds "
                          "each item's content hash, as `embed export` writes it: fix or rename it")
    return vals


def import_folder(src: str | Path, store: str | Path, name: str | None = None, progress: bool = True) -> ImportReport:
    """Commit every vector under `src` into `store` (created if missing) as one external vector set.

    The set is added beside the store's others and changes no item the store holds: the vector of
    an id the store already has joins that item (as a second encoder's vectors of the same items
    do), when the export's content hash for it is the item's or the export has none; a vector of
    other content than the stored item's is left out, and the report's notes say so."""
    from ..progress import progress_bar
    from ..store import ItemRows, open_store
    from ..store.schema import SCHEMA_VERSION, set_name_for

    src = Path(src)
    layout, parts = _parts(src)
    _check_parts(parts)
    manifest = {}
    if (src / "embedstore_export.json").is_file():
        try:
            manifest = json.loads((src / "embedstore_export.json").read_text())
        except (ValueError, OSError) as e:
            raise _unreadable(src / "embedstore_export.json", e) from None
    orig = manifest.get("provenance", {})
    first = np.asarray(next(_read_part(*parts[0], chunk=1000))[1], dtype=np.float32)
    if first.ndim != 2 or not len(first):
        raise SourceError(f"{parts[0][0]} holds no 2-D array of vectors")
    dim = first.shape[1]
    dtype = _stored_dtype(layout, parts[0][0])
    norms = np.linalg.norm(first, axis=1)
    normalize = orig.get("normalize") or ("l2" if np.allclose(norms, 1.0, atol=1e-2) else "none")
    made_by = str(name or orig.get("encoder") or src.name)
    # an export of an imported set is external already: it stays external:X, not external:external:X
    encoder = made_by if made_by.startswith("external:") else f"external:{made_by}"
    prov = {"encoder": encoder, "weights_sha256": "", "preprocess": {}, "layer": "", "pooling": "", "normalize": normalize,
            "dtype": dtype, "dim": dim, "modality": orig.get("modality", "image")}
    set_name = set_name_for(prov)  # as a build names its sets: `embed verify` checks the name by the same function
    attrs = {**prov, "preprocess": json.dumps(prov["preprocess"], sort_keys=True), "key": set_name.rsplit("-", 1)[1],
             "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "schema_version": SCHEMA_VERSION,
             "library_versions": "{}", "external": True, "external_source": str(src.resolve()),
             "external_provenance": json.dumps(orig, sort_keys=True, default=str)}
    notes = [] if orig.get("normalize") else [f"normalisation inferred from vector norms: {normalize}"]
    t0 = time.perf_counter()
    n, total, seen_ids, added = 0, 0, set(), 0
    joins = _Joins()
    with open_store(store, mode="a", create=True) as st, progress_bar(None, "import", "row", progress) as bar:
        held = st.stored_items() if st.path.exists() else None  # the items the store holds before this import
        # items with a vector in this set already (the same export imported before): left as they are, so a
        # second run of the same import adds nothing instead of a second row of every item
        in_set = st.live_rows(set_name, held) if held is not None else None
        for emb, meta in parts:
            for cols, X in _read_part(emb, meta):
                m = len(X)
                if X.ndim != 2 or X.shape[1] != dim:
                    raise SourceError(f"{emb.name} holds vectors of dimension {X.shape[1:]} ; the first part's are {dim}")
                if not np.isfinite(X).all():
                    raise SourceError(f"{emb.name} holds NaN or inf values; fix the file before importing")
                ids = _pick(cols, ID_COLUMNS, m, [f"{emb.stem}/{total + i}" for i in range(m)])
                dup = seen_ids.intersection(ids)
                if dup or len(set(ids)) != m:
                    raise SourceError(f"{src}: id {sorted(dup)[0] if dup else ids[0]!r} appears more than once; ids must be unique")
                seen_ids.update(ids)
                uris, labels, splits = _pick(cols, URI_COLUMNS, m), _pick(cols, ("label",), m), _pick(cols, ("split",), m)
                texts = _pick(cols, ("text", "caption"), m)
                if "meta" in cols:  # as `embed export` writes it
                    metas = [_meta_json(v, emb.name) for v in _pick(cols, ("meta",), m)]
                else:  # another tool's columns (clip-retrieval's caption, url, ...): each one not used above is metadata
                    used = {_first(cols, ID_COLUMNS), _first(cols, URI_COLUMNS), "label", "split", _first(cols, ("text", "caption")),
                            CONTENT_COLUMN}
                    extra = [c for c in cols if c not in used]
                    metas = [metadata_string({c: cols[c][i] for c in extra}) or "" for i in range(m)]
                content = _content_hashes(cols, m, emb.name)
                V = np.asarray(X, dtype=dtype)
                # an id the store holds keeps its item row; the vector carries that item's content hash
                shas, new = joins.match(held, ids, content, labels, splits, in_set)
                items = ItemRows()
                for i in np.flatnonzero(new):
                    shas[i] = content[i] or hashlib.sha256(V[i].tobytes()).hexdigest()  # none given: the vector stands for it
                    items.append(id=ids[i], uri=uris[i], label=labels[i], split=splits[i], sha256=shas[i], status="ok", text=texts[i],
                                 meta=metas[i])
                keep = np.flatnonzero([s is not None for s in shas])
                added += int(new.sum())
                if len(keep):
                    st.commit(set_name, attrs, items, [ids[i] for i in keep], [shas[i] for i in keep], V[keep], {})
                n += len(keep)
                total += m
                bar.update(m)
        if not n and joins.already == total:  # the same import again: nothing to do, nothing changed
            return ImportReport(str(src), str(store), set_name, layout, 0, dim, dtype, normalize, time.perf_counter() - t0,
                                notes + joins.notes())
        if not n:  # nothing was committed
            raise SourceError(f"none of the {total} vectors in {src} can be imported into {store}: {joins.left_out_reason()}; "
                              "import into a new store (--store NEW.h5) instead")
        st.refresh(index=True)
    notes += joins.notes()
    if held is not None and added and held.n:  # into a store that held items: its item table grew
        notes.append(f"{added} imported id(s) were not items of {Path(store).name}: added to its item table, with a vector "
                     f"in {set_name} only (`embed info {Path(store).name}` counts each set's vectors)")
    return ImportReport(str(src), str(store), set_name, layout, n, dim, dtype, normalize, time.perf_counter() - t0, notes)


class _Joins:
    """Imported ids the store already holds as items: each joins its item (vector hash = the item's
    content hash) unless the import says the vector is of other content, or the item is
    quarantined; counted for the report's notes."""

    def __init__(self):
        self.joined = self.unvouched = self.relabelled = self.already = 0
        self.left: list[tuple[str, str]] = []  # (id, why), the first few
        self.n_left = 0
        self.example = ""

    def match(self, held, ids: list, content: list, labels: list, splits: list, in_set=None) -> tuple[list, np.ndarray]:
        """(each row's vector hash, which rows are new to the store): the stored item's hash for an
        id that joins it, None for one left out or already in the set (`in_set`, a mask over the
        held items), "" (the caller's to fill) for a new id."""
        from ..store.schema import STATUS_OK

        m = len(ids)
        pos = held.positions(ids) if held is not None else np.full(m, -1, dtype=np.int64)
        new = pos < 0
        shas: list = [""] * m
        at = np.flatnonzero(~new)
        if not len(at):
            return shas, new
        have = held.gather(pos[at])
        have_sha = held.sha256(pos[at])
        for k, i in enumerate(at):
            if in_set is not None and in_set[pos[i]]:
                shas[i] = None
                self.already += 1
            elif have["status"][k] != STATUS_OK:
                self._leave(ids[i], f"the store's item is {have['status'][k]}")
                shas[i] = None
            elif content[i] and content[i] != have_sha[k]:
                self._leave(ids[i], f"its content hash is {content[i][:12]}..., the store's item's {have_sha[k][:12]}...")
                shas[i] = None
            else:
                shas[i] = have_sha[k]
                self.joined += 1
                self.unvouched += not content[i]
                if (labels[i], splits[i]) != (have["label"][k], have["split"][k]):
                    self.relabelled += 1
                    self.example = self.example or (f"{ids[i]!r}: label {labels[i]!r} split {splits[i]!r} here, "
                                                    f"label {have['label'][k]!r} split {have['split'][k]!r} in the store")
        return shas, new

    def _leave(self, item_id: str, why: str) -> None:
        self.n_left += 1
        if len(self.left) < 3:
            self.left.append((item_id, why))

    def left_out_reason(self) -> str:
        if not self.left:
            return "it holds none"
        i, why = self.left[0]
        return f"the store holds other content under their ids, or quarantined items (e.g. {i!r}: {why})"

    def notes(self) -> list[str]:
        out = []
        if self.joined:
            out.append(f"{self.joined} imported id(s) are items the store already held: their vectors join those items, "
                       "whose labels, splits and uris stay as stored"
                       + (f" ({self.relabelled} differ from the import's, e.g. {self.example})" if self.relabelled else "")
                       + (f"; for {self.unvouched} of them the import gives no content hash (sha256 column) to check that the "
                          "vector is of the stored content" if self.unvouched else ""))
        if self.n_left:
            out.append(f"{self.n_left} vector(s) left out: {self.left_out_reason()}")
        if self.already:
            out.append(f"{self.already} id(s) already have a vector in this set (imported before) and were left as they are; "
                       "to replace them, import into a new store, or under another --name")
        return out


def _meta_json(v, part: str) -> str:
    """An exported `meta` cell (item metadata as a JSON object) in the store's canonical form."""
    if not v:
        return ""
    try:
        d = json.loads(v)
    except ValueError:
        d = None
    if not isinstance(d, dict):
        raise SourceError(f"{part}: a 'meta' cell is not a JSON object ({str(v)[:60]!r}); it holds item metadata as "
                          "`embed export` writes it: fix or drop that column")
    return metadata_string(d) or ""
