"""Detectors from the fit set's mean and covariance: Mahalanobis distance and PCA reconstruction error."""

from __future__ import annotations

import numpy as np
from scipy import linalg

from .base import Detector


class MahalanobisDetector(Detector):
    """Squared Mahalanobis distance to the fit set's mean under a Ledoit-Wolf shrunk covariance: the
    values of scikit-learn's `LedoitWolf().fit(X).mahalanobis(Q)` (as float64), negated."""

    kind = "mahalanobis"
    _state_arrays = ("location_", "precision_")

    def __init__(self, contamination: float = 0.05):
        self.contamination = contamination

    def _fit(self, X: np.ndarray) -> None:
        gauss = _ShrunkGaussian(X)
        self.location_ = gauss.location
        self.precision_ = gauss.precision()

    def _score(self, X: np.ndarray) -> np.ndarray:
        Z = np.asarray(X, dtype=np.float64) - self.location_
        return -((Z @ self.precision_) * Z).sum(axis=1)

    def _fold_scores(self, fit: np.ndarray, held: np.ndarray) -> np.ndarray:
        """A cross-fitting fold scores its held-out items straight from the fold's shrunk covariance,
        without forming a d x d precision matrix that only those few items use."""
        return -_ShrunkGaussian(fit).sq_distances(held)


class _ShrunkGaussian:
    """scikit-learn's LedoitWolf fitted on X, in float64, held in a form that needs no d x d inverse.

    Why not LedoitWolf itself: its fit ends in `pinvh` of the d x d covariance (an eigendecomposition,
    O(d^3): 0.4 s at d = 1280 on 2 cores, 17 s under load), and cross-fitting repeats the fit for every
    fold, so 120 x 1280 fit items took 8.5-117 s. Its shrinkage also costs two d x d products
    (X.T @ X and X2.T @ X2, O(m d^2)) that the Gram or scatter matrix below already holds.

    With m items, centred rows Xc and S = Xc' Xc / m, the shrunk covariance is
    C = (1 - a) S + a mu I = c I + s Xc' Xc with c = a mu, s = (1 - a) / m. When m < d, C is the identity
    plus a rank-m term, so (Woodbury) C^-1 = (I - s Xc' K^-1 Xc) / c with K = c I + s Xc Xc' (m x m):
    a distance costs O(m d) and the fit O(m^2 d). When m >= d, one Cholesky of C (d x d).
    Where c is too small for C to be safely invertible (no shrinkage: constant or 1-feature data),
    scikit-learn's own fit and pseudo-inverse give the answer, as before."""

    def __init__(self, X: np.ndarray):
        X = np.asarray(X, dtype=np.float64)
        m, d = X.shape
        self.location = X.mean(axis=0)
        Xc = X - self.location
        self.low_rank = m < d
        G = Xc @ Xc.T if self.low_rank else Xc.T @ Xc  # Gram (m x m) or scatter (d x d): same trace and Frobenius norm
        a, mu = _ledoit_wolf_shrinkage(Xc, G)
        self.c, s = a * mu, (1.0 - a) / m
        self.reference = None
        # pinvh (scikit-learn's inverse) drops eigenvalues under d * eps * the largest; C's are all >= c
        if not self.c > d * np.finfo(np.float64).eps * (self.c + s * np.trace(G)):
            from sklearn.covariance import LedoitWolf

            self.reference = LedoitWolf().fit(X)
            return
        G *= s
        G.flat[:: len(G) + 1] += self.c  # K (m < d) or C itself (m >= d)
        self.chol = linalg.cholesky(G, lower=True)
        self.Xc, self.s = Xc, s

    def sq_distances(self, Q: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distances of Q's rows to the location."""
        Z = np.asarray(Q, dtype=np.float64) - self.location
        if self.reference is not None:
            return ((Z @ self.reference.precision_) * Z).sum(axis=1)
        if not self.low_rank:
            W = linalg.solve_triangular(self.chol, Z.T, lower=True)  # L^-1 z: z' C^-1 z = |L^-1 z|^2
            return (W * W).sum(axis=0)
        W = linalg.solve_triangular(self.chol, self.Xc @ Z.T, lower=True)
        return ((Z * Z).sum(axis=1) - self.s * (W * W).sum(axis=0)) / self.c

    def precision(self) -> np.ndarray:
        """C^-1 (d x d), for the saved detector."""
        if self.reference is not None:
            return self.reference.precision_
        if not self.low_rank:
            return linalg.cho_solve((self.chol, True), np.eye(len(self.chol)))
        A = linalg.solve_triangular(self.chol, self.Xc, lower=True)  # K^-1 = L'^-1 L^-1, so Xc' K^-1 Xc = A' A
        P = A.T @ A
        P *= -self.s
        P.flat[:: len(P) + 1] += 1.0
        return P / self.c


def _ledoit_wolf_shrinkage(Xc: np.ndarray, G: np.ndarray) -> tuple[float, float]:
    """(shrinkage, mu): scikit-learn's `ledoit_wolf_shrinkage(Xc, assume_centered=True)`, term for term,
    and mu = trace(S) / d, from the centred rows and their Gram or scatter matrix G.
    scikit-learn's sums beta_ = sum(X2' X2) and delta_ = |X' X|_F^2 / m^2 are, without the d x d
    products, sum_i |x_i|^4 and |G|_F^2 / m^2."""
    m, d = Xc.shape
    r = np.einsum("ij,ij->i", Xc, Xc)
    trace = r.sum() / m  # sum of emp_cov_trace
    mu = trace / d
    if d == 1:  # as scikit-learn's _ledoit_wolf: one feature, no shrinkage
        return 0.0, mu
    beta_ = (r * r).sum()
    delta_ = (G * G).sum() / m**2
    beta = 1.0 / (d * m) * (beta_ / m - delta_)
    delta = (delta_ - 2.0 * mu * trace + d * mu**2) / d
    beta = min(beta, delta)
    return (0.0 if beta == 0 else beta / delta), mu


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
