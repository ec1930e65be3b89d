"""Neighbour-based detectors on FAISS exact search: kNN distance and local outlier factor.

They are novelty detectors (`novelty = True`): `score_samples` treats X as new items; the fit
set's own scores (`fit_scores_`) are computed leaving each item out of its own neighbours."""

from __future__ import annotations

import numpy as np

from sklearn.utils.metaestimators import available_if

from .base import Detector


def _not_novelty(est) -> bool:
    return not est.novelty


class _NoveltyDetector(Detector):
    """Scores X as new items, so `fit(X).predict(X)` lets each item see itself; like scikit-learn's
    LocalOutlierFactor(novelty=True) there is no `fit_predict`: use `fit_scores_` - `offset_`."""

    novelty = True

    @available_if(_not_novelty)
    def fit_predict(self, X, y=None):  # pragma: no cover - hidden for novelty detectors
        return super().fit_predict(X, y)

AGGREGATIONS = ("mean", "max")


def _index(X: np.ndarray):
    import faiss

    idx = faiss.IndexFlatL2(X.shape[1])
    idx.add(np.ascontiguousarray(X, dtype=np.float32))
    return idx


def neighbours(fit: np.ndarray, X: np.ndarray, k: int, leave_self_out: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distances (n, k) and indices of the k nearest fit rows; with `leave_self_out`,
    X is `fit` itself and row i never counts as its own neighbour (duplicates still do)."""
    k_eff = min(k + int(leave_self_out), len(fit))
    d2, nb = _index(fit).search(np.ascontiguousarray(X, dtype=np.float32), k_eff)
    if leave_self_out:
        is_self = nb == np.arange(len(X))[:, None]
        is_self[~is_self.any(axis=1), -1] = True  # self not among the hits (ties): drop the farthest
        keep = ~is_self
        d2 = d2[keep].reshape(len(X), k_eff - 1)
        nb = nb[keep].reshape(len(X), k_eff - 1)
    return np.sqrt(np.maximum(d2, 0.0)).astype(np.float64), nb


class KNNDetector(_NoveltyDetector):
    """Distance to the k nearest fit items (mean or max): far from everything known = anomalous."""

    kind = "knn"
    _state_arrays = ("fit_vectors_",)

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

    def _fit_scores(self, X: np.ndarray) -> np.ndarray:
        return self._agg(neighbours(self.fit_vectors_, X, self.k, leave_self_out=True)[0])


class LOFDetector(_NoveltyDetector):
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
        self._fit_nb = (d, nb)

    def _lrd(self, d: np.ndarray, nb: np.ndarray) -> np.ndarray:
        reach = np.maximum(d, self.k_distance_[nb])
        return 1.0 / (reach.mean(axis=1) + 1e-10)

    def _lof(self, d: np.ndarray, nb: np.ndarray) -> np.ndarray:
        return -(self.lrd_[nb].mean(axis=1) / self._lrd(d, nb))

    def _score(self, X: np.ndarray) -> np.ndarray:
        return self._lof(*neighbours(self.fit_vectors_, X, self.k))

    def _fit_scores(self, X: np.ndarray) -> np.ndarray:
        d, nb = self.__dict__.pop("_fit_nb")
        return self._lof(d, nb)
