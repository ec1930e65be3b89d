"""`search`: a query (stored id, image file, text for CLIP stores, or a raw vector) -> the k nearest
items of a store, from its FAISS index or an exact scan, optionally filtered by label and split."""

from __future__ import annotations

import json

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import SearchError
from .index import SearchIndex, normalise
from .where import parse_where, row_mask


@dataclass
class SearchReport:
    store: str
    vector_set: str
    query: dict
    k: int
    where: str | None
    index: dict
    exact: bool
    hits: list = field(default_factory=list)  # {rank, id, uri, label, split, score}
    search_ms: float = 0.0
    note: str = ""  # which vector set was used, when the store has several
    plan: dict = field(default_factory=dict)  # how the index searched: method, selectivity, nprobe, complete

    def to_dict(self) -> dict:
        return asdict(self)


class _Snapshot:
    """One consistent state of a vector set: rows (catalog held open), index over a prefix of them."""

    def __init__(self, vs, rows, index, meta, state, stamp):
        self.vs, self.rows, self.meta, self.state, self.stamp = vs, rows, meta, state, stamp
        metric = "inner_product" if vs.provenance.get("normalize", "l2") == "l2" else "l2"
        self.search = SearchIndex(index, meta, rows, metric, cosine=metric == "inner_product")
        self.row_of = None
        self.masks: dict = {}  # --where text -> row mask (a few kept: servers repeat their filters)

    def mask(self, where: str | None):
        if not where:
            return None
        if where not in self.masks:
            if len(self.masks) >= 8:
                self.masks.pop(next(iter(self.masks)))
            self.masks[where] = row_mask(self.rows, where)
        return self.masks[where]


CLOSE_IDS = 10_000  # ids a missing id is compared with for "did you mean"


def set_notes(vs) -> list[str]:
    """The note of a vector set chosen among several (the newest, when none was named), for a
    report's notes: every command that picks one says which, as `embed search` does."""
    note = getattr(vs, "note", None)
    return [note] if note else []


def nothing_to_search(vs, rows, where: str | None) -> SearchError:
    """The error when no row is left to search: the set `vs` holds none (`rows` is empty), or the
    filter `where` matches none of its rows."""
    if len(rows) == 0:
        why = (f" ({vs.stale_rows} superseded row(s), of items whose content changed since, are left out)"
               if vs.stale_rows else "")
        return SearchError(f"vector set {vs.name} has no items to search{why}; see it with `embed info`")
    if not where:  # a caller's own row mask selected none
        return SearchError(f"none of the {len(rows)} items of {vs.name} is selected to search")
    return SearchError(f"--where {where!r} matches no items of {vs.name}; check labels and splits with `embed info`")


def _stamp(path: Path) -> tuple:
    try:
        st = os.stat(path)
        return (st.st_ino, st.st_mtime_ns, st.st_size)
    except OSError:
        return ()


def load_snapshot(store: str | Path, vector_set: str | None = None, wait_s: float = 5.0) -> _Snapshot:
    """The last committed state of a set; a build running meanwhile never makes this fail: rows
    it committed after the index was last written are searched exactly."""
    from ..store import open_store
    from ..store.index import load_index_for_rows

    deadline = time.monotonic() + wait_s
    while True:
        with open_store(store, mode="r") as st:
            before = _stamp(st.path)
            vs = st.select_set(vector_set)
            rows = st.rows(vs.name)
            rows.pin()
            index, meta, state = load_index_for_rows(st.sidecar, vs.name, rows.ids, vs.provenance.get("dtype") == "float16")
            after = _stamp(st.path)
        if before == after and (state != "ahead" or time.monotonic() > deadline):
            break  # else a writer replaced the catalog meanwhile, or is about to: read again
        time.sleep(0.05)
    if state != "ok":
        why = {"damaged": "the index is damaged (its bytes do not match its checksum) and not used until `embed verify "
                          "--repair` or the next `embed build` rebuilds it",
               "missing": "no index yet; the next `embed build` makes one",
               "before_unit_rows": "the index was built before float16 rows were read back as unit vectors and is not "
                                   "used (searches scan exactly) until `embed verify --repair` or the next `embed build` "
                                   "rebuilds it"}
        meta = {**meta, "exact": True, "note": why.get(state, f"the index is {state}; the next `embed build` brings it up to date")}
    return _Snapshot(vs, rows, index, meta, state, after)


class SearchContext:
    """One vector set opened for queries: rows, provenance, index; the encoder loads on first use.
    `embed search` makes one per call; `embed serve` keeps one for its lifetime. Searches answer
    from the last committed state and pick up a newer one (checked at most once a second)."""

    RELOAD_S = 1.0

    def __init__(self, store: str | Path, vector_set: str | None = None, weights: str | None = None, device: str = "auto"):
        self.store = str(store)
        self.vector_set = vector_set
        self._snap = load_snapshot(store, vector_set)
        self._checked = time.monotonic()
        self.weights, self.device = weights, device
        self._service = None

    @property
    def vs(self):
        return self._snap.vs

    @property
    def rows(self):
        return self._snap.rows

    @property
    def meta(self) -> dict:
        return self._snap.meta

    @property
    def prov(self) -> dict:
        return self._snap.vs.provenance

    @property
    def index(self) -> SearchIndex:
        return self._snap.search

    def refresh_due(self) -> bool:
        """Whether `refresh` would look at the store now (at most once a RELOAD_S)."""
        return time.monotonic() - self._checked >= self.RELOAD_S

    def refresh(self, force: bool = False) -> bool:
        """Load the store's newest committed state if it changed; True when it did."""
        now = time.monotonic()
        if not force and now - self._checked < self.RELOAD_S:
            return False
        self._checked = now
        if not force and _stamp(Path(self._snap.rows.catalog)) == self._snap.stamp:
            return False
        try:
            self._snap = load_snapshot(self.store, self.vector_set)
        except Exception:  # noqa: BLE001 - mid-write or gone: keep answering from the state we have
            return False
        return True

    # ---- query vectors ---------------------------------------------------------------------
    def row_of(self, item_id: str, snap: _Snapshot | None = None) -> int | None:
        snap = snap or self._snap
        if snap.row_of is None:
            snap.row_of = {str(i): k for k, i in enumerate(snap.rows.ids)}
        return snap.row_of.get(item_id)

    def stored_id(self, item_id: str) -> str | None:
        """The id of the set's row that `item_id` names: itself, else the id `embed ls` prints as
        `item_id` (a newline in a file name written \\n: naming.from_line); None when neither is
        there. Every door that takes an id (search, the server, batch queries, recommend) goes through here."""
        if self.row_of(item_id) is not None:
            return item_id
        from ..naming import from_line

        plain = from_line(item_id)
        return plain if plain != item_id and self.row_of(plain) is not None else None

    def vector_for_id(self, item_id: str) -> np.ndarray:
        r = self.row_of(item_id)
        if r is None:
            raise self.missing_id_error(item_id)
        return self.rows.fetch(np.array([r]))

    def missing_id_error(self, item_id: str) -> SearchError:
        """Why `item_id` has no row in this set, with what to do: in another set, quarantined, a close
        match, or where ids come from. Every door (search, recommend, the server) says this."""
        import difflib

        holders = self._sets_holding(item_id)
        if holders:
            prov = self.rows.provenance
            into = (f"import its vector into this set with `embed import FOLDER --store {self.store}` (the set's vectors "
                    "were imported, not embedded here)" if str(prov.get("encoder", "")).startswith("external:") else
                    f"embed it into this set with `embed build SOURCE --store {self.store} --encoder {prov.get('encoder')}`")
            return SearchError(f"item '{item_id}' has no vector in {self.rows.set_name} (added after that set was made); "
                               f"it is in {', '.join(holders)}: pick that with --set, or {into}")
        why = self._quarantined(item_id)
        if why is not None:  # it was "no item with that id", and a close match was offered instead (another file)
            return SearchError(f"item '{item_id}' has no vector: it is quarantined ({why}); fix or replace the file and "
                               "re-run `embed build`")
        # close matches among the first CLOSE_IDS ids: any door, the server's included, pays at most ~0.1 s
        close = difflib.get_close_matches(item_id, list(self.rows.ids[:CLOSE_IDS]), n=3) if len(item_id) <= 512 else []
        hint = f"; did you mean {', '.join(close)}?" if close else " (ids are paths relative to the source folder; see `embed info`)"
        return SearchError(f"no item with id '{item_id}' in {self.rows.set_name}{hint}")

    def _quarantined(self, item_id: str) -> str | None:
        """The reason the store's item `item_id` is quarantined, or None (for the error of an id with no vector)."""
        from ..store import open_store
        from ..store.schema import STATUS_OK

        snap = self._snap
        cached = getattr(self, "_quarantine", None)
        if cached is None or cached[0] is not snap:  # once per committed state: a server answers many unknown ids
            try:
                with open_store(self.store) as st:
                    items = st.items()
                bad = np.flatnonzero(np.asarray(items["status"]) != STATUS_OK)
                reasons = {str(items["id"][i]): str(items["reason"][i]) or str(items["status"][i]) for i in bad}
            except Exception:  # noqa: BLE001 - only a better error message is lost
                reasons = {}
            self._quarantine = cached = (snap, reasons)
        return cached[1].get(item_id)

    def _sets_holding(self, item_id: str) -> list[str]:
        """The store's other vector sets that hold `item_id` (for the error when this one does not)."""
        from ..store import open_store

        try:
            with open_store(self.store) as st:
                return [vs.name for vs in st.vector_sets()
                        if vs.name != self.rows.set_name and item_id in set(map(str, st.rows(vs.name).ids))]
        except Exception:  # noqa: BLE001 - only a better error message is lost
            return []

    def service(self):
        """The embedding service that made this set (loaded on first use): query files and texts are
        embedded exactly as the stored vectors were."""
        if self._service is None:
            if str(self.prov.get("encoder", "")).startswith("external:"):
                other = f" ({self.vs.note})" if getattr(self.vs, "note", None) else ""  # the store's other sets, when it has several
                raise SearchError(f"{self.vs.name} holds vectors imported from elsewhere ({self.prov['encoder']}); embedstore cannot "
                                  f"embed new images or texts for it: query it with --id or --vector-file, or search a set "
                                  f"embedstore built with --set NAME{other}")
            from ..embedding import EmbeddingService

            self._service = EmbeddingService.from_provenance(self.prov, self.weights, self.device, error=SearchError)
        return self._service

    def vector_for_image_bytes(self, data: bytes, name: str = "query image") -> np.ndarray:
        from ..sources.images import DecodeError

        svc = self.service()
        if svc.modality != "image":
            raise SearchError(f"{self.vs.name} holds text vectors; search it with --text, --id or --vector-file")
        try:
            return svc.embed_image_bytes(data, name)
        except DecodeError as e:
            raise SearchError(f"{name} cannot be used: {e}") from None

    def vector_for_image(self, image: Path) -> np.ndarray:
        _, V, skipped = self.vectors_for_image_files([(str(image), Path(image))])
        if skipped:
            raise SearchError(skipped[0]["reason"])
        return V

    def vectors_for_image_files(self, named: list[tuple[str, Path]]) -> tuple[list[str], np.ndarray, list[dict]]:
        """Query images (name, path) -> (names, vectors, skipped [{query, reason}]): read one by one,
        encoded in one batch by the set's service."""
        from ..sources.images import DecodeError, read_bytes

        svc = self.service()
        if svc.modality != "image":
            raise SearchError(f"{self.vs.name} holds text vectors; search it with --text, --id or --vector-file")
        datas, skipped = [], []
        for name, path in named:
            if not Path(path).is_file():
                skipped.append({"query": name, "reason": f"query image {path} does not exist"})
                continue
            try:
                datas.append((name, read_bytes(str(path))))
            except DecodeError as e:
                skipped.append({"query": name, "reason": f"query image {path} cannot be used: {e}"})
        names, V, bad = svc.embed_image_batch(datas)
        where = dict(named)
        skipped += [{"query": n, "reason": f"query image {where[n]} cannot be used: {why}"} for n, why in bad]
        return names, V, skipped

    def vector_for_text(self, text: str) -> np.ndarray:
        if not str(text).strip():  # as the build, which quarantines an empty text, and the server
            raise SearchError("the text query is empty; give the words to search for, e.g. --text \"a red bicycle\"")
        if self.prov.get("modality") != "text" and not str(self.prov.get("encoder", "")).startswith("open_clip:"):
            raise SearchError(f"text queries need a text store or one built with a CLIP encoder (open_clip:...); this set was made with "
                              f"{self.prov.get('encoder')}. Rebuild with e.g. --encoder open_clip:ViT-B-32/openai")
        return self.service().embed_texts([str(text).strip()])  # as a build reads a text: the spaces around it dropped

    def vector_from_file(self, path: Path) -> np.ndarray:
        """The one query vector of `path`; a file of several is refused (batch search answers each)."""
        v = vectors_from_file(path, self.rows.dim, cosine=self.prov.get("normalize", "l2") == "l2")
        if len(v) != 1:
            raise SearchError(f"--vector-file {path} holds {len(v)} vectors; it takes one. To search with each, "
                              f"save them as .npy and run: embed search STORE --queries FILE.npy --out hits.csv")
        return v

    def vectors_from_file(self, path: Path, flag: str = "--queries") -> np.ndarray:
        return vectors_from_file(path, self.rows.dim, flag, cosine=self.prov.get("normalize", "l2") == "l2")

    # ---- the search ------------------------------------------------------------------------
    def run(self, Q: np.ndarray, k: int = 10, where: str | None = None, exact: bool = False,
            exclude_id: str | None = None) -> tuple[list, bool, float]:
        """(hits, exact, milliseconds) for one query vector; `exclude_id` (the query's own item)
        never comes back."""
        hits, plan, ms = self.run_batch(Q, k, where, exact, None if exclude_id is None else [exclude_id])
        return hits[0], plan["exact"], ms

    def run_batch(self, Q: np.ndarray, k: int = 10, where: str | None = None, exact: bool = False,
                  exclude_ids: list | None = None, mask: np.ndarray | None = None) -> tuple[list[list], dict, float]:
        """Hits per query row of Q, the plan the index followed, milliseconds for the whole batch."""
        check_k(k)
        self.refresh()
        snap = self._snap
        rows = snap.rows
        allowed = snap.mask(where) if mask is None else mask
        pool = snap.search.count(allowed)
        if pool == 0:
            raise nothing_to_search(snap.vs, rows, where)
        excl = None
        if exclude_ids is not None:
            excl = np.array([-1 if i is None else (self.row_of(str(i), snap) if self.row_of(str(i), snap) is not None else -1)
                             for i in exclude_ids], dtype=np.int64)
            if allowed is not None:
                excl = np.where((excl >= 0) & allowed[np.clip(excl, 0, None)], excl, -1)
        room = pool - (1 if excl is not None and (excl >= 0).any() else 0)
        check_k(k, room, where=where, after=" (the query item itself left out)" if room < pool else "")
        Q = np.array(Q, dtype=np.float32, ndmin=2)
        if snap.vs.provenance.get("normalize", "l2") == "l2":
            Q = normalise(Q)
        t0 = time.perf_counter()
        res = snap.search.search(Q, k, allowed, excl, exact=exact)
        ms = 1000 * (time.perf_counter() - t0)
        plan = dict(res.plan)
        plan["exact"] = bool(exact or snap.search.index is None or "exact" in plan.get("method", ""))
        out = []
        for D, R in zip(res.D, res.R):
            out.append([row_hit(rows, j, r + 1, d) for r, (d, j) in enumerate((d, j) for d, j in zip(D, R) if j >= 0)])
        return out, plan, ms


def row_hit(rows, j: int, rank: int | None = None, score: float | None = None) -> dict:
    """One row as every door shows it: rank, id, uri, label, split, score, and its text and
    metadata (a manifest's other columns, as --where sees them) when it has them."""
    h = {"rank": rank, "id": str(rows.ids[j]), "uri": str(rows.uris[j]), "label": str(rows.labels[j]),
         "split": str(rows.splits[j]), "score": None if score is None else float(score)}
    if rank is None:
        del h["rank"], h["score"]
    if rows.texts is not None and rows.texts[j]:
        h["text"] = str(rows.texts[j])
    if rows.metas[j]:
        h["meta"] = json.loads(rows.metas[j])
    return h


def vectors_from_file(path: Path, dim: int, flag: str = "--vector-file", cosine: bool = True) -> np.ndarray:
    """Query vectors (n, dim) from a .npy (one vector a row) or comma-separated text (one a line);
    `flag` names the option in errors. `cosine` (an L2-normalised set, searched by inner product):
    an all-zero vector is refused."""
    try:
        v = np.load(path, allow_pickle=False) if str(path).endswith(".npy") else np.loadtxt(path, delimiter=",", ndmin=1)
    except (OSError, ValueError) as e:
        raise SearchError(f"{flag} {path} cannot be read as a vector ({str(e).splitlines()[0][:100]}); use .npy or comma-separated numbers") from None
    if not np.issubdtype(np.asarray(v).dtype, np.number) or np.asarray(v).dtype.kind == "c":
        raise SearchError(f"{flag} {path} holds {np.asarray(v).dtype} values, not real numbers; save the vectors as float32")
    v = np.asarray(v, dtype=np.float32).reshape(-1, v.shape[-1]) if np.ndim(v) else np.zeros((1, 0), np.float32)
    if v.shape[-1] != dim:
        raise SearchError(f"{flag} {path} has {v.shape[-1]} values per vector; this set's vectors have {dim}")
    if not np.isfinite(v).all():
        raise SearchError(f"{flag} {path} has NaN or inf values")
    zero = np.flatnonzero(~v.any(axis=1))
    if cosine and len(zero):  # every item scores 0 against it: the hits would be an arbitrary order
        raise SearchError(f"{flag} {path}: vector {zero[0]} is all zeros, which has no direction to search along")
    return v


def check_k(k: int, room: int | None = None, there: str = "item(s) there are to search", where: str | None = None,
            after: str = "") -> None:
    """The one -k rule of search, neighbours and recommend: at least 1, and (given `room`) no more
    than the items a query can get back, said with the --where that left them."""
    if k < 1:
        raise SearchError(f"-k must be at least 1, not {k}")
    if room is not None and room < 1:  # no -k would do: say what left nothing, not "use -k 1 or less"
        raise SearchError(f"nothing can come back: 0 {there}" + (f" (after --where {where})" if where else "") + after
                          + ("; widen --where" if where else "") + (" or leave fewer items out" if after and where else
                                                                      "; leave fewer items out" if after else ""))
    if room is not None and k > room:
        raise KTooLarge(f"-k {k} is larger than the {room} {there}" + (f" (after --where {where})" if where else "")
                        + after + f"; use -k {max(room, 1)} or less", room, after)


class KTooLarge(SearchError):
    """k above what a query can get back; `room` is how many can (the server's clip_k answers with
    those), `after` what was left out to count them."""

    def __init__(self, message: str, room: int, after: str = ""):
        super().__init__(message)
        self.room, self.after = room, after


def search(store: str | Path, item_id: str | None = None, image: str | Path | None = None, text: str | None = None,
           vector_file: str | Path | None = None, k: int = 10, where: str | None = None, exact: bool = False,
           vector_set: str | None = None, weights: str | None = None, device: str = "auto",
           include_self: bool = False) -> SearchReport:
    """The k nearest items of `store` to one query; scores are inner products (L2-normalised sets: cosine)
    or squared L2 distances. A stored item's own row is left out of its results unless `include_self`."""
    given = {"id": item_id, "image": image, "text": text, "vector_file": vector_file}
    asked = {k_: v for k_, v in given.items() if v is not None}
    if len(asked) != 1:
        raise SearchError("give exactly one query: --id ID, --image FILE, --text \"...\" or --vector-file FILE"
                          + (f" (got {', '.join(asked)})" if asked else ""))
    check_k(k)
    ctx = SearchContext(store, vector_set, weights, device)
    parse_where(where)  # a malformed filter fails before any encoder loads
    if item_id is not None:
        item_id = ctx.stored_id(item_id) or item_id  # also as `embed ls` prints it (a newline written \n)
    exclude = item_id if item_id is not None and not include_self else None
    Q = ctx.vector_for_id(item_id) if item_id is not None else None  # an unknown id is the first thing to say
    if k > len(ctx.rows) - (exclude is not None):  # the size error (which counts the item left out) before any encoder loads
        ctx.run(np.zeros((1, ctx.rows.dim), np.float32), k, where, exclude_id=exclude)
    if image is not None and not Path(image).is_file():  # before the encoder loads (seconds)
        raise SearchError(f"query image {image} " + ("is a folder: give one image file, or a folder with --queries DIR --out FILE"
                                                     if Path(image).is_dir() else "does not exist"))
    if item_id is not None:
        pass
    elif image is not None:
        Q = ctx.vector_for_image(Path(image))
    elif text is not None:
        Q = ctx.vector_for_text(text)
    else:
        Q = ctx.vector_from_file(Path(vector_file))
    out, plan, ms = ctx.run_batch(Q, k, where, exact, None if exclude is None else [exclude])
    hits, used_exact = out[0], plan["exact"]
    return SearchReport(store=str(store), vector_set=ctx.vs.name, query={kind: str(v) for kind, v in asked.items()}, k=k,
                        where=where, index={k_: v for k_, v in ctx.meta.items() if k_ != "ids_sha256"}, exact=used_exact,
                        hits=hits, search_ms=ms, note=ctx.vs.note, plan=plan)
