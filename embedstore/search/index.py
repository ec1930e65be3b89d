"""The index object: the one place that searches vectors with FAISS.

`SearchIndex` owns a vector set's index kind and tuned parameters (nprobe), re-ranking of IVF-PQ
candidates by the stored vectors, row filters, leaving query items out of their own results, and
rows a build appended after the index was last written (scanned exactly and merged in). Filtered
search is exact in what it returns: the filter selects rows first, its selectivity decides the
plan (FAISS ID selector on flat indexes; IVF probes widened in proportion to 1/selectivity, up to
every list, which on IVF-Flat is an exact scan; IVF-PQ scans the selected rows' stored vectors
exactly when they fit in memory). Takes arrays and row readers, never paths.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

SUBSET_BYTES = 256 << 20  # filtered IVF: selected rows up to this many float32 bytes may be scanned exactly in memory
SUBSET_SELECTIVITY = 0.05  # ... on IVF-Flat when they are at most this share of the rows (IVF-PQ: any share)
WIDEN = 4  # filtered IVF: probe WIDEN * nprobe / selectivity lists (every list past half of them)
TAIL_CACHE_ROWS = 200_000  # unindexed rows kept in memory between queries


def normalise(Q: np.ndarray) -> np.ndarray:
    Q = np.array(Q, dtype=np.float32, ndmin=2)
    return Q / np.maximum(np.linalg.norm(Q, axis=1, keepdims=True), 1e-12)


@dataclass
class SearchResult:
    """Scores (nq, k) and row positions (nq, k; -1 for none) with how they were found."""

    D: np.ndarray
    R: np.ndarray
    plan: dict = field(default_factory=dict)


class ArrayRows:
    """In-memory vectors with the reader interface of `store.rows.SetRows` (chunks, fetch)."""

    def __init__(self, X: np.ndarray):
        self.X = np.ascontiguousarray(X, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.X)

    def chunks(self, mask=None, chunk_rows: int = 65536):
        for s in range(0, len(self.X), chunk_rows):
            e = min(len(self.X), s + chunk_rows)
            sel = np.arange(s, e) if mask is None else np.flatnonzero(mask[s:e]) + s
            if len(sel):
                yield sel, self.X[sel]

    def fetch(self, positions: np.ndarray) -> np.ndarray:
        return self.X[np.asarray(positions, dtype=np.int64)]


def _better(inner: bool):
    return (lambda a, b: a > b) if inner else (lambda a, b: a < b)


def merge_topk(parts: list[tuple[np.ndarray, np.ndarray]], k: int, inner: bool) -> tuple[np.ndarray, np.ndarray]:
    """Best k of several (scores, rows) result lists per query; rows -1 are empty slots."""
    D = np.concatenate([p[0] for p in parts], axis=1)
    R = np.concatenate([p[1] for p in parts], axis=1)
    worst = -np.inf if inner else np.inf
    D = np.where(R >= 0, D, worst)
    order = np.argsort(-D if inner else D, axis=1, kind="stable")[:, :k]
    D, R = np.take_along_axis(D, order, 1), np.take_along_axis(R, order, 1)
    if D.shape[1] < k:
        pad = k - D.shape[1]
        D = np.pad(D, ((0, 0), (0, pad)), constant_values=worst)
        R = np.pad(R, ((0, 0), (0, pad)), constant_values=-1)
    return D.astype(np.float32), R.astype(np.int64)


def knn_vectors(Q: np.ndarray, X: np.ndarray, k: int, inner: bool) -> tuple[np.ndarray, np.ndarray]:
    """Exact k-NN of Q among the rows of X (in memory): (scores, positions in X)."""
    import faiss

    k_eff = min(k, len(X))
    if k_eff == 0:
        return np.zeros((len(Q), 0), np.float32), np.zeros((len(Q), 0), np.int64)
    return faiss.knn(np.ascontiguousarray(Q, dtype=np.float32), np.ascontiguousarray(X, dtype=np.float32), k_eff,
                     metric=faiss.METRIC_INNER_PRODUCT if inner else faiss.METRIC_L2)


class SearchIndex:
    """Search over one vector set's rows.

    `index` is the set's FAISS index (tuned parameters applied) over the first `index.ntotal` rows,
    or None (no usable index: every search scans exactly); `meta` its metadata (kind, params);
    `rows` reads vectors by row (`chunks(mask)`, `fetch(positions)`). `cosine`: the rows are unit
    vectors (a store's L2-normalised set), so scores are cosines, kept within [-1, 1]: a float16
    row's norm is 1 only to about 1e-3, and a self-match would otherwise score 1.0001."""

    def __init__(self, index, meta: dict, rows, metric: str = "inner_product", cosine: bool = False):
        self.index = index
        self.cosine = cosine and metric == "inner_product"
        self.meta = dict(meta or {})
        self.rows = rows
        self.inner = metric == "inner_product"
        self.n_indexed = int(index.ntotal) if index is not None else 0
        self.kind = self.meta.get("kind") or ("flat" if self.meta.get("exact", True) else "ivfflat")
        self.params = dict(self.meta.get("params") or {})
        self._subset: tuple[object, np.ndarray, np.ndarray] | None = None  # (mask, rows, vectors)
        self._tail: tuple[int, np.ndarray, np.ndarray] | None = None  # (n rows, positions, vectors)
        self._counted: tuple[object, int] | None = None  # (mask, its count): servers repeat their filters
        self._fast = index is not None and int(self.params.get("rerank", 1)) == 1  # unfiltered: FAISS as is
        # float16 sets keep IVF lists as SQfp16 (store/index.py): the same hits as IVF-Flat, half the memory
        self.ivf_name = {"IVFSQfp16": "IVF-SQfp16", "IVFPQ": "IVF-PQ"}.get(self.meta.get("type"),
                                                                          "IVF-PQ" if self.kind == "ivfpq" else "IVF-Flat")
        self._fast_plan = {"selectivity": 1.0, "complete": True, "method": "exact (flat index)" if self.kind == "flat" else
                           f"{self.ivf_name} nprobe {self.params.get('nprobe')}/{self.params.get('nlist')}"}

    def count(self, allowed: np.ndarray | None) -> int:
        """Rows a mask selects (remembered for the last mask object: summing 1M booleans is not free)."""
        if allowed is None:
            return len(self.rows)
        if self._counted is None or self._counted[0] is not allowed:
            self._counted = (allowed, int(allowed.sum()))
        return self._counted[1]

    @classmethod
    def from_vectors(cls, X: np.ndarray, metric: str = "inner_product") -> "SearchIndex":
        """An exact in-memory index over X (heads and detectors): vectors as given, not normalised."""
        import faiss

        X = np.ascontiguousarray(X, dtype=np.float32)
        index = faiss.IndexFlatIP(X.shape[1]) if metric == "inner_product" else faiss.IndexFlatL2(X.shape[1])
        index.add(X)
        return cls(index, {"kind": "flat", "exact": True}, ArrayRows(X), metric)

    def __len__(self) -> int:
        return len(self.rows)

    # ---- the search ----------------------------------------------------------------------
    def search(self, Q: np.ndarray, k: int, allowed: np.ndarray | None = None, exclude: np.ndarray | None = None,
               exact: bool = False) -> SearchResult:
        """The k best rows for each query among `allowed` rows (a boolean mask; None: all), never
        the row `exclude[i]` for query i (-1: none). Scores: inner product or squared L2."""
        if not (isinstance(Q, np.ndarray) and Q.dtype == np.float32 and Q.ndim == 2 and Q.flags.c_contiguous):
            Q = np.ascontiguousarray(np.array(Q, dtype=np.float32, ndmin=2))
        n = len(self.rows)
        if allowed is None and exclude is None and not exact and self._fast and self.n_indexed == n and k <= n:
            D, R = self.index.search(Q, k)  # the common case, as FAISS answers it (tuned nprobe already set)
            if len(R) == 0 or R[:, -1].min() >= 0:
                return SearchResult(self._bounded(D, R), R, dict(self._fast_plan, rows=n, selected=n, indexed_rows=n))
        excl = None if exclude is None else np.asarray(exclude, dtype=np.int64).reshape(len(Q))
        kk = k + (1 if excl is not None and (excl >= 0).any() else 0)
        ni = min(self.n_indexed, n)
        pool = self.count(allowed)
        plan = {"rows": n, "selected": pool, "selectivity": pool / max(n, 1), "indexed_rows": ni}
        parts = []
        if exact or self.index is None:
            plan["method"] = "exact scan" + ("" if self.index is not None else f" ({self.meta.get('note') or 'no index covers these rows yet'})")
            parts.append(self._scan(Q, kk, allowed, 0, n))
        else:
            head = None if allowed is None else allowed if ni == len(allowed) else allowed[:ni]
            parts.append(self._indexed(Q, kk, head, plan, pool if head is allowed else None))
            if ni < n:  # rows appended after the index was written (a build in progress): exact
                plan["unindexed_rows_scanned"] = n - ni
                parts.append(self._tail_scan(Q, kk, allowed, ni, n))
        if len(parts) == 1 and parts[0][1].shape[1] == kk:
            D, R = parts[0]  # one sorted result list of the right width: nothing to merge
        else:
            D, R = merge_topk(parts, kk, self.inner)
        if excl is not None:
            D, R = _drop_rows(D, R, excl, k)
        elif D.shape[1] > k:
            D, R = D[:, :k], R[:, :k]
        plan["complete"] = bool((R >= 0).sum(axis=1).min() >= min(k, pool - (0 if excl is None else 1))) if len(R) else True
        return SearchResult(self._bounded(D, R), R, plan)

    def _bounded(self, D: np.ndarray, R: np.ndarray) -> np.ndarray:
        """Cosine scores clipped to [-1, 1] (empty slots, R -1, left as they are)."""
        if self.cosine and D.size:
            D = np.where(R >= 0, np.clip(D, -1.0, 1.0), D).astype(D.dtype, copy=False)
        return D

    def _indexed(self, Q, k, allowed, plan, pool=None):
        """Search the FAISS index over rows [0, n_indexed), restricted to `allowed` rows."""
        import faiss

        ni = self.n_indexed
        if pool is None:
            pool = ni if allowed is None else int(allowed.sum())
        if pool == 0:
            return np.full((len(Q), k), -np.inf, np.float32), np.full((len(Q), k), -1, np.int64)
        s = pool / max(ni, 1)
        if (self.kind != "flat" and allowed is not None and pool * self.rows_dim() * 4 <= SUBSET_BYTES
                and (self.kind == "ivfpq" or s <= SUBSET_SELECTIVITY)):
            plan["method"] = f"exact scan of the {pool} selected rows' stored vectors (selected first, kept in memory)"
            return self._subset_scan(Q, k, allowed)
        sel = None
        if allowed is not None:
            bitmap = np.packbits(allowed.astype(np.uint8), bitorder="little")
            sel = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap))
            sel._bitmap = bitmap  # keep the bits alive as long as the selector
        if self.kind == "flat":
            plan["method"] = "exact (flat index" + (", ID selector)" if sel is not None else ")")
            params = faiss.SearchParameters(sel=sel) if sel is not None else None
            return self.index.search(Q, min(k, pool), params=params) if params else self.index.search(Q, min(k, pool))
        ivf = faiss.extract_index_ivf(self.index)
        nlist, base = int(ivf.nlist), int(self.params.get("nprobe", ivf.nprobe))
        rerank = int(self.params.get("rerank", 1))
        nprobe = base if allowed is None else min(nlist, math.ceil(WIDEN * base / max(s, 1e-9)))
        if allowed is not None and 2 * nprobe >= nlist:
            nprobe = nlist
        depth = min(k * rerank, pool)
        while True:
            params = faiss.SearchParametersIVF(sel=sel, nprobe=nprobe) if sel is not None else faiss.SearchParametersIVF(nprobe=nprobe)
            D, R = self.index.search(Q, depth, params=params)
            found = (R >= 0).sum(axis=1).min() if len(R) else depth
            if found >= min(depth, pool) or nprobe >= nlist:
                break
            nprobe = min(nlist, 2 * nprobe)  # fewer than k hits in the probed lists: widen
        exact_ivf = self.kind == "ivfflat" and nprobe >= nlist
        plan["method"] = (f"{self.ivf_name} nprobe {nprobe}/{nlist}"
                          + (" (every list: exact)" if exact_ivf else "")
                          + (f", re-ranked top {depth} by stored vectors" if rerank > 1 else "")
                          + (f", widened from {base} for selectivity {s:.3g}" if allowed is not None and nprobe > base else ""))
        plan["nprobe"] = nprobe
        if rerank > 1:
            D, R = rerank_rows(Q, D, R, self.rows.fetch, k, self.inner)
        return D, R

    def rows_dim(self) -> int:
        return int(getattr(self.rows, "dim", 0) or self.index.d)

    def _subset_scan(self, Q, k, allowed):
        if self._subset is None or not (self._subset[0] is allowed or np.array_equal(self._subset[0], allowed)):
            pos, X = _gather(self.rows, allowed)
            self._subset = (allowed, pos, X)
        _, pos, X = self._subset
        D, I = knn_vectors(Q, X, k, self.inner)
        return D, np.where(I >= 0, pos[np.clip(I, 0, None)], -1)

    def _tail_scan(self, Q, k, allowed, start, stop):
        if self._tail is None or self._tail[0] != stop:
            mask = np.zeros(stop, dtype=bool)
            mask[start:stop] = True
            pos, X = _gather(self.rows, mask)
            if stop - start > TAIL_CACHE_ROWS:
                return self._scan(Q, k, allowed, start, stop)
            self._tail = (stop, pos, X)
        _, pos, X = self._tail
        if allowed is not None:
            keep = allowed[pos]
            pos, X = pos[keep], X[keep]
        D, I = knn_vectors(Q, X, k, self.inner)
        return D, np.where(I >= 0, pos[np.clip(I, 0, None)], -1)

    def _scan(self, Q, k, allowed, start, stop):
        """Brute force over rows [start, stop) (selected by `allowed`), streamed in chunks."""
        mask = np.zeros(len(self.rows), dtype=bool)
        mask[start:stop] = True
        if allowed is not None:
            mask &= allowed
        return exact_search(Q, lambda: self.rows.chunks(mask), k, self.inner)


def _gather(rows, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions, float32 vectors) of the rows where `mask` is true: a few rows by point reads,
    many by streaming slabs."""
    if mask.sum() * 50 < len(mask) and hasattr(rows, "fetch"):
        pos = np.flatnonzero(mask)
        X = np.concatenate([rows.fetch(pos[s : s + 4096]) for s in range(0, len(pos), 4096)]) if len(pos) else None
        if X is not None and np.isfinite(X).all():
            return pos, np.ascontiguousarray(X, dtype=np.float32)
    pos, parts = [], []
    for p, X in rows.chunks(mask):
        pos.append(p)
        parts.append(X)
    if not pos:
        return np.zeros(0, np.int64), np.zeros((0, 1), np.float32)
    return np.concatenate(pos), np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)


def _drop_rows(D: np.ndarray, R: np.ndarray, excl: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Remove row excl[i] from query i's results; keep the best k of the rest."""
    keep = (R != excl[:, None]) | (excl[:, None] < 0)
    keep[:, k:] &= np.cumsum(keep, axis=1)[:, k:] <= k  # at most k per query
    keep[keep.sum(axis=1) > k, -1] = False
    outD = np.stack([d[m][:k] for d, m in zip(D, keep)]) if len(D) else D[:, :k]
    outR = np.stack([r[m][:k] for r, m in zip(R, keep)]) if len(R) else R[:, :k]
    return outD, outR


def rerank_rows(Q: np.ndarray, D: np.ndarray, R: np.ndarray, fetch, k: int, inner_product: bool):
    """Re-score approximate candidates (rows `R`, -1 for none) by their exact stored vectors; keep
    the best k. `fetch(rows)` returns float32 vectors for unique row positions."""
    out_d = np.full((len(Q), k), -np.inf if inner_product else np.inf, dtype=np.float32)
    out_r = np.full((len(Q), k), -1, dtype=np.int64)
    for i, (q, rows) in enumerate(zip(np.asarray(Q, dtype=np.float32), R)):
        rows = np.unique(rows[rows >= 0])
        if not len(rows):
            continue
        X = fetch(rows)
        score = X @ q if inner_product else ((X - q) ** 2).sum(axis=1)
        order = np.argsort(-score if inner_product else score, kind="stable")[:k]
        out_d[i, : len(order)], out_r[i, : len(order)] = score[order], rows[order]
    return out_d, out_r


def index_search(index, Q: np.ndarray, k: int, allowed_rows: np.ndarray | None = None, nprobe: int | None = None):
    """(scores, rows) straight from a FAISS index (benchmarks compare it with `SearchIndex`)."""
    import faiss

    Q = np.ascontiguousarray(Q, dtype=np.float32)
    if allowed_rows is None:
        return index.search(Q, k)
    sel = faiss.IDSelectorBatch(np.ascontiguousarray(allowed_rows, dtype=np.int64))
    params = faiss.SearchParametersIVF(sel=sel, nprobe=nprobe) if nprobe else faiss.SearchParameters(sel=sel)
    return index.search(Q, k, params=params)


def exact_search(Q: np.ndarray, chunks, k: int, inner_product: bool):
    """Brute force over (row positions, vectors) chunks from `chunks()`; memory stays at one chunk."""
    Q = np.ascontiguousarray(np.array(Q, dtype=np.float32, ndmin=2))
    best = (np.zeros((len(Q), 0), np.float32), np.zeros((len(Q), 0), np.int64))
    for pos, X in chunks():
        D, I = knn_vectors(Q, X, k, inner_product)
        best = merge_topk([best, (D, np.where(I >= 0, np.asarray(pos)[np.clip(I, 0, None)], -1))], k, inner_product)
    return merge_topk([best], k, inner_product)
