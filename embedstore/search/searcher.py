"""k-NN over arrays: the set's FAISS index (with a row filter as a FAISS ID selector) or an exact
scan of streamed chunks. Takes arrays and iterators, never paths."""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np


def normalise(Q: np.ndarray) -> np.ndarray:
    Q = np.array(Q, dtype=np.float32, ndmin=2)
    return Q / np.maximum(np.linalg.norm(Q, axis=1, keepdims=True), 1e-12)


def index_search(index, Q: np.ndarray, k: int, allowed_rows: np.ndarray | None = None, nprobe: int | None = None):
    """(scores, rows) from a FAISS index; `allowed_rows` restricts results to those rows."""
    import faiss

    Q = np.ascontiguousarray(Q, dtype=np.float32)
    if allowed_rows is None:
        return index.search(Q, k)
    sel = faiss.IDSelectorBatch(np.ascontiguousarray(allowed_rows, dtype=np.int64))
    params = faiss.SearchParametersIVF(sel=sel, nprobe=nprobe) if nprobe else faiss.SearchParameters(sel=sel)
    return index.search(Q, k, params=params)


def rerank(Q: np.ndarray, D: np.ndarray, R: np.ndarray, fetch: Callable[[np.ndarray], np.ndarray], k: int,
           inner_product: bool) -> tuple[np.ndarray, np.ndarray]:
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


def exact_search(Q: np.ndarray, chunks: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]], k: int, inner_product: bool):
    """Brute force over (row positions, vectors) chunks; memory stays at one chunk."""
    import faiss
    from faiss.contrib.exhaustive_search import knn_ground_truth

    positions = []

    def vectors():
        for pos, X in chunks():
            positions.append(pos)
            yield np.ascontiguousarray(X, dtype=np.float32)

    D, I = knn_ground_truth(np.ascontiguousarray(Q, dtype=np.float32), vectors(), k,
                            metric_type=faiss.METRIC_INNER_PRODUCT if inner_product else faiss.METRIC_L2)
    allpos = np.concatenate(positions) if positions else np.zeros(0, dtype=np.int64)
    rows = np.where(I >= 0, allpos[np.clip(I, 0, max(len(allpos) - 1, 0))], -1)
    return D, rows
