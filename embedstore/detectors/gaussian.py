"""Detectors from the fit set's mean and covariance: Mahalanobis distance and PCA reconstruction error."""

from __future__ import annotations

import numpy as np

from .base import Detector


class MahalanobisDetector(Detector):
    """Squared Mahalanobis distance to the fit set's mean under a Ledoit-Wolf shrunk covariance."""

    kind = "mahalanobis"
    _state_arrays = ("location_", "precision_")

    def __init__(self, contamination: float = 0.05):
        self.contamination = contamination

    def _fit(self, X: np.ndarray) -> None:
        from sklearn.covariance import LedoitWolf

        lw = LedoitWolf().fit(X.astype(np.float64))
        self.location_ = lw.location_
        self.precision_ = lw.precision_

    def _score(self, X: np.ndarray) -> np.ndarray:
        Z = np.asarray(X, dtype=np.float64) - self.location_
        return -((Z @ self.precision_) * Z).sum(axis=1)


class PCADetector(Detector):
    """Squared reconstruction error from the principal subspace that keeps `variance` of the variance
    (or `n_components` directions when given), at most n_features - 1 directions."""

    kind = "pca"
    _state_arrays = ("mean_", "components_")

    def __init__(self, variance: float = 0.9, n_components: int | None = None, contamination: float = 0.05):
        self.variance = variance
        self.n_components = n_components
        self.contamination = contamination

    def _fit(self, X: np.ndarray) -> None:
        if not 0 < self.variance <= 1:
            raise ValueError(f"variance must be in (0, 1], not {self.variance!r}")
        Xd = np.asarray(X, dtype=np.float64)
        self.mean_ = Xd.mean(axis=0)
        _, s, Vt = np.linalg.svd(Xd - self.mean_, full_matrices=False)
        if self.n_components is not None:
            k = int(self.n_components)
        else:
            ev = s**2
            k = int(np.searchsorted(np.cumsum(ev) / max(ev.sum(), 1e-300), self.variance) + 1)
        # at most n_features - 1 directions: a subspace that is the whole space reconstructs every item
        # (errors are rounding noise, ~1e-31), so there would be nothing left to rank or threshold
        self.components_ = Vt[: min(max(1, k), len(Vt), X.shape[1] - 1)]

    def _score(self, X: np.ndarray) -> np.ndarray:
        Z = np.asarray(X, dtype=np.float64) - self.mean_
        R = Z - (Z @ self.components_.T) @ self.components_
        return -(R * R).sum(axis=1)
