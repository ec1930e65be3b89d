"""`search`: a query (stored id, image file, text for CLIP stores, or a raw vector) -> the k nearest
items of a store, from its FAISS index or an exact scan, optionally filtered by label and split."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import SearchError
from .searcher import exact_search, index_search, normalise, rerank
from ..store.select import filter_mask, parse_filter


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

    def to_dict(self) -> dict:
        return asdict(self)


class SearchContext:
    """One vector set opened for queries: rows, provenance, index; the encoder loads on first use.
    `embed search` makes one per call; `embed serve` keeps one for its lifetime."""

    def __init__(self, store: str | Path, vector_set: str | None = None, weights: str | None = None, device: str = "auto"):
        from ..store import open_store

        self.store = str(store)
        with open_store(store, mode="r") as st:
            self.vs = st.select_set(vector_set)
            self.rows = st.rows(self.vs.name)
            self.index, self.meta = st.index(self.vs.name)
        self.prov = self.vs.provenance
        self.weights, self.device = weights, device
        self._service = None
        self._row_of = None

    # ---- query vectors ---------------------------------------------------------------------
    def row_of(self, item_id: str) -> int | None:
        if self._row_of is None:
            self._row_of = {str(i): k for k, i in enumerate(self.rows.ids)}
        return self._row_of.get(item_id)

    def vector_for_id(self, item_id: str) -> np.ndarray:
        r = self.row_of(item_id)
        if r is None:
            import difflib

            close = difflib.get_close_matches(item_id, list(self.rows.ids[:100000]), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else " (ids are paths relative to the source folder; see `embed info`)"
            raise SearchError(f"no item with id '{item_id}' in {self.rows.set_name}{hint}")
        mask = np.zeros(len(self.rows), dtype=bool)
        mask[r] = True
        return next(iter(self.rows.chunks(mask)))[1]

    def service(self):
        """The embedding service that made this set (loaded on first use): query files and texts are
        embedded exactly as the stored vectors were."""
        if self._service is None:
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
        from ..sources.images import DecodeError, read_bytes

        if not Path(image).is_file():
            raise SearchError(f"query image {image} does not exist")
        try:
            data = read_bytes(str(image))
        except DecodeError as e:
            raise SearchError(f"query image {image} cannot be used: {e}") from None
        return self.vector_for_image_bytes(data, f"query image {image}")

    def vector_for_text(self, text: str) -> np.ndarray:
        if self.prov.get("modality") != "text" and not str(self.prov.get("encoder", "")).startswith("open_clip:"):
            raise SearchError(f"text queries need a text store or one built with a CLIP encoder (open_clip:...); this set was made with "
                              f"{self.prov.get('encoder')}. Rebuild with e.g. --encoder open_clip:ViT-B-32/openai")
        return self.service().embed_texts([text])

    def vector_from_file(self, path: Path) -> np.ndarray:
        return _query_by_file(path, self.rows.dim)

    # ---- the search ------------------------------------------------------------------------
    def run(self, Q: np.ndarray, k: int = 10, where: str | None = None, exact: bool = False) -> tuple[list, bool, float]:
        """(hits, exact, milliseconds) for one query vector."""
        if k < 1:
            raise SearchError(f"-k must be at least 1, not {k}")
        rows = self.rows
        flt = parse_filter(where)
        allowed = filter_mask(rows, flt) if flt else None
        pool = int(allowed.sum()) if allowed is not None else len(rows)
        if pool == 0:
            raise SearchError(f"--where {where!r} matches no items of {self.vs.name}; check labels and splits with `embed info`")
        if k > pool:
            raise SearchError(f"-k {k} is larger than the {pool} item(s) there are to search" + (f" (after --where {where})" if flt else "")
                              + f"; use -k {pool} or less")
        inner = self.prov.get("normalize", "l2") == "l2"
        if inner:
            Q = normalise(Q)
        use_exact = exact or bool(self.meta.get("exact"))
        t0 = time.perf_counter()
        if use_exact and not self.meta.get("exact"):  # forced brute force over the stored vectors
            D, R = exact_search(Q, lambda: rows.chunks(allowed), k, inner)
        else:
            params = self.meta.get("params", {})
            depth = k * int(params.get("rerank", 1))  # IVF-PQ: candidates re-ranked by the stored vectors
            D, R = index_search(self.index, Q, min(depth, pool), np.flatnonzero(allowed) if allowed is not None else None,
                                params.get("nprobe"))
            if depth > k:
                D, R = rerank(Q, D, R, rows.fetch, k, inner)
        ms = 1000 * (time.perf_counter() - t0)
        hits = [{"rank": r + 1, "id": str(rows.ids[j]), "uri": str(rows.uris[j]), "label": str(rows.labels[j]),
                 "split": str(rows.splits[j]), "score": float(d)} for r, (d, j) in enumerate(zip(D[0], R[0])) if j >= 0]
        if rows.texts is not None:
            for h, j in zip(hits, [j for j in R[0] if j >= 0]):
                if rows.texts[j]:
                    h["text"] = str(rows.texts[j])
        return hits, use_exact, ms


def _query_by_file(path: Path, dim: int) -> np.ndarray:
    try:
        v = np.load(path, allow_pickle=False) if str(path).endswith(".npy") else np.loadtxt(path, delimiter=",", ndmin=1)
    except (OSError, ValueError) as e:
        raise SearchError(f"--vector-file {path} cannot be read as a vector ({str(e).splitlines()[0][:100]}); use .npy or comma-separated numbers") from None
    v = np.asarray(v, dtype=np.float32).reshape(-1, v.shape[-1]) if np.ndim(v) else np.zeros((1, 0), np.float32)
    if v.shape[-1] != dim:
        raise SearchError(f"--vector-file {path} has {v.shape[-1]} values per vector; this set's vectors have {dim}")
    if not np.isfinite(v).all():
        raise SearchError(f"--vector-file {path} has NaN or inf values")
    return v


def search(store: str | Path, item_id: str | None = None, image: str | Path | None = None, text: str | None = None,
           vector_file: str | Path | None = None, k: int = 10, where: str | None = None, exact: bool = False,
           vector_set: str | None = None, weights: str | None = None, device: str = "auto") -> SearchReport:
    """The k nearest items of `store` to one query; scores are inner products (L2-normalised sets: cosine)
    or squared L2 distances."""
    given = {"id": item_id, "image": image, "text": text, "vector_file": vector_file}
    asked = {k_: v for k_, v in given.items() if v is not None}
    if len(asked) != 1:
        raise SearchError("give exactly one query: --id ID, --image FILE, --text \"...\" or --vector-file FILE"
                          + (f" (got {', '.join(asked)})" if asked else ""))
    if k < 1:
        raise SearchError(f"-k must be at least 1, not {k}")
    ctx = SearchContext(store, vector_set, weights, device)
    parse_filter(where)  # a malformed filter fails before any encoder loads
    if k > len(ctx.rows):
        ctx.run(np.zeros((1, ctx.rows.dim), np.float32), k, where)  # raises the size error
    if item_id is not None:
        Q = ctx.vector_for_id(item_id)
    elif image is not None:
        Q = ctx.vector_for_image(Path(image))
    elif text is not None:
        Q = ctx.vector_for_text(text)
    else:
        Q = ctx.vector_from_file(Path(vector_file))
    hits, used_exact, ms = ctx.run(Q, k, where, exact)
    return SearchReport(store=str(store), vector_set=ctx.vs.name, query={kind: str(v) for kind, v in asked.items()}, k=k,
                        where=where, index={k_: v for k_, v in ctx.meta.items() if k_ != "ids_sha256"}, exact=used_exact,
                        hits=hits, search_ms=ms, note=ctx.vs.note)
