"""Neighbour-based detectors on FAISS exact search: kNN distance and local outlier factor.

Like every detector they score X as new items. kNN's held-out fit scores are exact leave-one-out
(each fit item against the n - 1 others); LOF's are cross-fitted as the base class does it."""

from __future__ import annotations

import numpy as np

from .base import Detector

AGGREGATIONS = ("mean", "max")


def _index(X: np.ndarray):
    from ..search.index import SearchIndex

    return SearchIndex.from_vectors(X, "l2")


def neighbours(fit: np.ndarray, X: np.ndarray, k: int, leave_self_out: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distances (n, k) and indices of the k nearest fit rows; with `leave_self_out`,
    X is `fit` itself and row i never counts as its own neighbour (duplicates still do)."""
    k_eff = min(k + int(leave_self_out), len(fit))
    res = _index(fit).search(np.ascontiguousarray(X, dtype=np.float32), k_eff)
    d2, nb = res.D, res.R
    if leave_self_out:
        is_self = nb == np.arange(len(X))[:, None]
        is_self[~is_self.any(axis=1), -1] = True  # self not among the hits (ties): drop the farthest
        keep = ~is_self
        d2 = d2[keep].reshape(len(X), k_eff - 1)
        nb = nb[keep].reshape(len(X), k_eff - 1)
    return np.sqrt(np.maximum(d2, 0.0)).astype(np.float64), nb


class KNNDetector(Detector):
    """Distance to the k nearest fit items (mean or max): far from everything known = anomalous."""

    kind = "knn"
    _state_arrays = ("fit_vectors_",)
    _min_samples = 2

    def __init__(self, k: int = 5, aggregation: str = "mean", contamination: float = 0.05):
        self.k = k
        self.aggregation = aggregation
        self.contamination = contamination

    def _check_params(self) -> None:
        if not (isinstance(self.k, (int, np.integer)) and self.k >= 1):
            raise ValueError(f"k must be a positive integer, not {self.k!r}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, not {self.aggregation!r}")

    def _fit(self, X: np.ndarray) -> None:
        self._check_params()
        if len(X) < 2:
            raise ValueError(f"{type(self).__name__} needs at least 2 samples to fit; got n_samples = {len(X)}")
        self.fit_vectors_ = np.ascontiguousarray(X, dtype=np.float32)

    def _agg(self, d: np.ndarray) -> np.ndarray:
        return -(d.mean(axis=1) if self.aggregation == "mean" else d.max(axis=1))

    def _score(self, X: np.ndarray) -> np.ndarray:
        return self._agg(neighbours(self.fit_vectors_, X, self.k)[0])

    def _held_out_scores(self, X: np.ndarray) -> tuple[np.ndarray, dict]:
        """Leave-one-out: cross-fitting with n folds, exact and free here, since a kNN model fitted
        on all items but i scores i exactly as the full model does with i left out of its neighbours."""
        self._check_params()
        return self._agg(neighbours(X, X, self.k, leave_self_out=True)[0]), {"method": "leave-one-out"}


class LOFDetector(Detector):
    """Local outlier factor (Breunig et al.): density relative to the neighbours' densities."""

    kind = "lof"
    _state_arrays = ("fit_vectors_", "k_distance_", "lrd_")

    def __init__(self, k: int = 20, contamination: float = 0.05):
        self.k = k
        self.contamination = contamination

    def _fit(self, X: np.ndarray) -> None:
        if not (isinstance(self.k, (int, np.integer)) and self.k >= 1):
            raise ValueError(f"k must be a positive integer, not {self.k!r}")
        if len(X) < 2:
            raise ValueError(f"{type(self).__name__} needs at least 2 samples to fit; got n_samples = {len(X)}")
        self.fit_vectors_ = np.ascontiguousarray(X, dtype=np.float32)
        d, nb = neighbours(self.fit_vectors_, X, self.k, leave_self_out=True)
        self.k_distance_ = d[:, -1]
        self.lrd_ = self._lrd(d, nb)

    def _lrd(self, d: np.ndarray, nb: np.ndarray) -> np.ndarray:
        reach = np.maximum(d, self.k_distance_[nb])
        return 1.0 / (reach.mean(axis=1) + 1e-10)

    def _lof(self, d: np.ndarray, nb: np.ndarray) -> np.ndarray:
        return -(self.lrd_[nb].mean(axis=1) / self._lrd(d, nb))

    def _score(self, X: np.ndarray) -> np.ndarray:
        return self._lof(*neighbours(self.fit_vectors_, X, self.k))
