"""One-class SVM (RBF): trained by scikit-learn, kept and scored as support vectors and weights."""

from __future__ import annotations

import numpy as np

from .base import Detector


class OneClassSVMDetector(Detector):
    """Kernel density-like score sum_i a_i exp(-gamma |x - sv_i|^2) / sum_i a_i: scikit-learn's
    OneClassSVM score_samples divided by its dual coefficients' sum, which grows with the fit size
    (libsvm's sum is nu * n); so scores of models fitted on different numbers of items (the
    cross-fitting folds, a refit on more data) are on one scale. Fits on at most `max_fit` seeded
    items (the solver is quadratic in the fit size)."""

    kind = "ocsvm"
    _state_arrays = ("support_vectors_", "dual_coef_", "gamma_")

    def __init__(self, nu: float = 0.1, gamma="scale", max_fit: int = 10000, contamination: float = 0.05, random_state=0):
        self.nu = nu
        self.gamma = gamma
        self.max_fit = max_fit
        self.contamination = contamination
        self.random_state = random_state

    def _fit(self, X: np.ndarray) -> None:
        from sklearn.svm import OneClassSVM
        from sklearn.utils import check_random_state

        fit = X
        if len(X) > self.max_fit:
            fit = X[check_random_state(self.random_state).choice(len(X), self.max_fit, replace=False)]
        svm = OneClassSVM(nu=self.nu, gamma=self.gamma).fit(fit)
        self.support_vectors_ = svm.support_vectors_.astype(np.float64)
        a = svm.dual_coef_.ravel().astype(np.float64)
        self.dual_coef_ = a / a.sum()
        self.gamma_ = np.float64(svm._gamma)

    def _score(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        out = np.empty(len(X))
        for s in range(0, len(X), 4096):
            B = X[s : s + 4096]
            d2 = (B * B).sum(1)[:, None] - 2 * B @ self.support_vectors_.T + (self.support_vectors_**2).sum(1)[None, :]
            out[s : s + 4096] = np.exp(-self.gamma_ * np.maximum(d2, 0)) @ self.dual_coef_
        return out

    @classmethod
    def from_state(cls, doc: dict, arrays: dict[str, np.ndarray]) -> "OneClassSVMDetector":
        est = super().from_state(doc, arrays)
        if doc.get("calibration") is None:  # saved by an older embedstore: unnormalised coefficients
            total = float(est.dual_coef_.sum())
            est.dual_coef_ = est.dual_coef_ / total
            est.fit_scores_ = est.fit_scores_ / total
            est.offset_ = est.offset_ / total
        return est

