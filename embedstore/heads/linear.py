"""Linear SVM and ridge heads: linear scores, probabilities by temperature-scaled softmax."""

from __future__ import annotations

import numpy as np

from .base import Head, fit_temperature, scores_to_proba
from .lbfgs import Chunks


class _LinearHead(Head):
    _state_arrays = ("coef_", "intercept_", "temperature_")

    def _scores(self, X: np.ndarray) -> np.ndarray:
        s = np.asarray(X, dtype=np.float64) @ self.coef_.T.astype(np.float64) + self.intercept_
        return s[:, 0] if s.shape[1] == 1 else s

    def _proba(self, scores: np.ndarray) -> np.ndarray:
        return scores_to_proba(scores / float(self.temperature_))

    def _calibrate(self, X: np.ndarray, y_idx: np.ndarray) -> None:
        """Margins are not probabilities: one temperature, fitted by log loss, maps them to some."""
        self.temperature_ = np.float64(fit_temperature(self._scores(X), y_idx))


class LinearSVMHead(_LinearHead):
    """Linear SVM (squared hinge, L2; scikit-learn's LinearSVC), one-vs-rest."""

    kind = "linear-svm"
    sweep_param = "C"
    sweep_grid = tuple(float(f"{c:.3g}") for c in np.logspace(-4, 3, 8))

    def __init__(self, C: float = 1.0, tol: float = 1e-4, max_iter: int = 2000, random_state=0):
        self.C = C
        self.tol = tol
        self.max_iter = max_iter
        self.random_state = random_state

    def _fit(self, X: np.ndarray, y_idx: np.ndarray) -> None:
        from sklearn.svm import LinearSVC
        from sklearn.utils import check_random_state

        svc = LinearSVC(C=self.C, tol=self.tol, max_iter=self.max_iter, dual="auto",
                        random_state=check_random_state(self.random_state).randint(2**31 - 1))
        svc.fit(X, y_idx)
        self.coef_ = svc.coef_.astype(np.float32)
        self.intercept_ = svc.intercept_.astype(np.float32)
        self.n_iter_ = int(svc.n_iter_)
        self._calibrate(X, y_idx)


class RidgeHead(_LinearHead):
    """Ridge classifier: least squares on +-1 targets, one column per class (scikit-learn's
    RidgeClassifier). Closed form from X'X, so it trains out of core in one pass and a sweep
    over alpha costs one eigendecomposition."""

    kind = "ridge"
    sweep_param = "alpha"
    sweep_grid = tuple(float(f"{a:.3g}") for a in np.logspace(-4, 4, 9))
    streams = True

    def __init__(self, alpha: float = 1.0):
        self.alpha = alpha

    def _fit(self, X: np.ndarray, y_idx: np.ndarray) -> None:
        self._solve(gram_stats(lambda: [(X, y_idx)], len(self.classes_)))
        self._calibrate(X, y_idx)

    def fit_chunks(self, chunks: Chunks, classes: np.ndarray, n_features: int, in_memory: bool = False, stats=None):
        """Train from a stream of (X, y_idx) chunks in one pass (`stats` from `gram_stats` saves it)."""
        self.classes_ = np.asarray(classes)
        self.n_features_in_ = int(n_features)
        self._solve(stats or gram_stats(chunks, len(self.classes_)))
        scores, ys = [], []
        for X, y in chunks():  # calibration needs the scores: a second pass
            scores.append(self._scores(X))
            ys.append(y)
        self.temperature_ = np.float64(fit_temperature(np.concatenate(scores), np.concatenate(ys)))
        return self

    def _solve(self, g: dict) -> None:
        if not (isinstance(self.alpha, (int, float)) and self.alpha >= 0):
            raise ValueError(f"alpha must be a non-negative number, not {self.alpha!r}")
        e, U = g["eig"]
        W = (U / (e + self.alpha)) @ (U.T @ g["xty"])  # (d, outputs)
        self.coef_ = W.T.astype(np.float32)
        self.intercept_ = (g["ymean"] - g["xmean"] @ W).astype(np.float32)


def gram_stats(chunks: Chunks, n_classes: int) -> dict:
    """Centred X'X (eigendecomposed) and X'Y for +-1 targets, accumulated chunk by chunk in float64."""
    n, sx, sy, xx, xy = 0, 0.0, 0.0, 0.0, 0.0
    n_out = 1 if n_classes == 2 else n_classes
    for X, y in chunks():
        X = np.asarray(X, dtype=np.float64)
        Y = -np.ones((len(y), n_out))
        if n_out == 1:
            Y[y == 1, 0] = 1.0
        else:
            Y[np.arange(len(y)), y] = 1.0
        n += len(X)
        sx = sx + X.sum(0)
        sy = sy + Y.sum(0)
        xx = xx + X.T @ X
        xy = xy + X.T @ Y
    xmean, ymean = sx / n, sy / n
    xxc = xx - n * np.outer(xmean, xmean)
    xyc = xy - n * np.outer(xmean, ymean)
    e, U = np.linalg.eigh((xxc + xxc.T) / 2)
    return {"eig": (np.clip(e, 0, None), U), "xty": xyc, "xmean": xmean, "ymean": ymean, "n": n}
