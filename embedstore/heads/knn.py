"""k-nearest-neighbour head on cosine similarity, FAISS-backed, similarity-weighted votes."""

from __future__ import annotations

import numpy as np

from .base import Head


def l2_normalise(X: np.ndarray) -> np.ndarray:
    X = np.array(X, dtype=np.float32, order="C")  # a copy: FAISS wants contiguous float32
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    X /= np.maximum(norms, 1e-12)
    return X


class KNNHead(Head):
    """Votes of the k most similar training vectors, each weighted exp(similarity / temperature)
    (the weighted kNN used to evaluate self-supervised features). Exact search (IndexFlatIP)."""

    kind = "knn"
    sweep_param = "k"
    sweep_grid = (1, 3, 5, 10, 20, 50, 100)
    _state_arrays = ("fit_vectors_", "fit_labels_")

    def __init__(self, k: int = 10, temperature: float = 0.07):
        self.k = k
        self.temperature = temperature

    def _fit(self, X: np.ndarray, y_idx: np.ndarray) -> None:
        if not (isinstance(self.k, (int, np.integer)) and self.k >= 1):
            raise ValueError(f"k must be a positive integer, not {self.k!r}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, not {self.temperature!r}")
        self.fit_vectors_ = l2_normalise(X)
        self.fit_labels_ = y_idx.astype(np.int64)
        self.fit_path_ = f"exact FAISS inner-product search over {len(X)} x {X.shape[1]} vectors in memory"

    def _index(self):
        """An exact inner-product index over the training vectors (the search package's index object)."""
        from ..search.index import SearchIndex

        return SearchIndex.from_vectors(self.fit_vectors_, "inner_product")

    def _scores(self, X: np.ndarray) -> np.ndarray:
        """Normalised weighted votes per class (n, K); for two classes p1 - p0."""
        k = min(int(self.k), len(self.fit_vectors_))
        res = self._index().search(l2_normalise(X), k)
        sims, nbrs = res.D, res.R
        w = np.exp((sims.astype(np.float64) - 1.0) / self.temperature)  # shifted by the max possible similarity
        votes = np.zeros((len(X), len(self.classes_)))
        np.add.at(votes, (np.repeat(np.arange(len(X)), k), self.fit_labels_[nbrs].ravel()), w.ravel())
        votes /= np.maximum(votes.sum(axis=1, keepdims=True), 1e-300)
        return votes[:, 1] - votes[:, 0] if len(self.classes_) == 2 else votes

    def _proba(self, scores: np.ndarray) -> np.ndarray:
        if scores.ndim == 1:
            p1 = (scores + 1.0) / 2.0
            return np.column_stack([1.0 - p1, p1])
        return scores
