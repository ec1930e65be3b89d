"""The common shape of a classifier head: a scikit-learn estimator whose fitted state is arrays.

Subclasses implement `_fit(X, y_idx)` (X float32, y_idx in 0..K-1) and `_scores(X)`, and list
their learned arrays in `_state_arrays`; that list is what a saved head holds (no pickle).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

FLOATS = [np.float32, np.float64]
ONE_THREAD_MAX_VALUES = 4_000_000  # products over fewer values than this run with one BLAS thread


def blas_threads(values: int):
    """A context that runs scikit-learn's fits on `values` feature values (rows x dims of the largest
    product) with one BLAS thread when that is small. Small products gain nothing from threads and
    lose up to 40x when another process holds a core: OpenBLAS threads spin waiting for each other
    (measured on 2 cores: a 255 x 1280 logistic fit 0.41 s with two busy threads, 0.01 s with one;
    an MLP fit on 80 x 1280 items 24.6 s with two, 3.0 s with one, while another build ran)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1 if values <= ONE_THREAD_MAX_VALUES else None, user_api="blas")


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # stable for large |z|


def scores_to_proba(scores: np.ndarray) -> np.ndarray:
    """Binary heads give one logit per row; multiclass heads one per class."""
    if scores.ndim == 1:
        p1 = sigmoid(scores)
        return np.column_stack([1.0 - p1, p1])
    return softmax(scores.copy())


def fit_temperature(scores: np.ndarray, y_idx: np.ndarray) -> float:
    """The temperature T that makes softmax(scores / T) best calibrated on (scores, y): the lowest
    cross-entropy against Platt's smoothed targets, (n + 1) / (n + 2) for the true class and the rest
    shared by the others. With one-hot targets, held-out scores that are all right (separable data)
    drive T to zero and every probability to 1.0, wrong answers on new items included."""
    from scipy.optimize import minimize_scalar

    n = len(y_idx)
    rows = np.arange(n)
    k = 2 if np.ndim(scores) == 1 else np.shape(scores)[1]
    hit = (n + 1) / (n + 2)
    miss = (1 - hit) / (k - 1)

    def nll(log_t: float) -> float:
        logp = np.log(np.clip(scores_to_proba(scores / np.exp(log_t)), 1e-12, None))
        return -(hit * logp[rows, y_idx] + miss * (logp.sum(axis=1) - logp[rows, y_idx])).mean()

    # bounds relative to the scores' own scale: a strongly regularised head (C = 1e-4) has scores of
    # about 1e-3, which need T about 1e-4 (a fixed lower bound of 0.01 left its probabilities at 1/K)
    spread = float(np.std(scores)) if np.size(scores) else 1.0
    spread = spread if np.isfinite(spread) and spread > 0 else 1.0
    res = minimize_scalar(nll, bounds=(np.log(1e-3 * spread), np.log(1e3 * spread)), method="bounded")
    return float(np.exp(res.x))


class Head(ClassifierMixin, BaseEstimator):
    """Base classifier head: validation, classes, predict/proba plumbing and state arrays."""

    kind: ClassVar[str] = ""
    sweep_param: ClassVar[str | None] = None  # the regularisation parameter chosen on validation
    sweep_grid: ClassVar[tuple] = ()
    streams: ClassVar[bool] = False  # can train from chunks of vectors (out of core)
    _state_arrays: ClassVar[tuple[str, ...]] = ()

    def fit(self, X, y):
        X, y = validate_data(self, X, y, dtype=FLOATS)
        check_classification_targets(y)
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"{type(self).__name__} needs at least 2 classes; got 1 class ({self.classes_[0]!r})")
        self._fit(np.asarray(X, dtype=np.float32), y_idx)
        return self

    def _fit(self, X: np.ndarray, y_idx: np.ndarray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _scores(self, X: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check(self, X) -> np.ndarray:
        check_is_fitted(self)
        return validate_data(self, X, reset=False, dtype=FLOATS)

    def decision_function(self, X) -> np.ndarray:
        """Per-class scores (n, K); for two classes one score per row, > 0 meaning classes_[1]."""
        return self._scores(self._check(X))

    def predict_proba(self, X) -> np.ndarray:
        return self._proba(self._scores(self._check(X)))

    def _proba(self, scores: np.ndarray) -> np.ndarray:
        return scores_to_proba(scores)

    def predict(self, X) -> np.ndarray:
        s = self._scores(self._check(X))
        idx = (s > 0).astype(np.int64) if s.ndim == 1 else s.argmax(axis=1)
        return self.classes_[idx]

    # ---- state for saving without pickle --------------------------------------------------
    def state_arrays(self) -> dict[str, np.ndarray]:
        check_is_fitted(self)
        return {name: np.asarray(getattr(self, name)) for name in self._state_arrays}

    def state_fields(self) -> dict:
        return {"classes": [str(c) for c in self.classes_], "n_features": int(self.n_features_in_)}

    @classmethod
    def state_array_names(cls) -> tuple[str, ...]:
        return cls._state_arrays

    @classmethod
    def from_state(cls, doc: dict, arrays: dict[str, np.ndarray]) -> "Head":
        classes, n_features = doc["classes"], doc["n_features"]
        if not isinstance(classes, list) or len(classes) < 2 or not isinstance(n_features, int):
            raise ValueError("no valid classes / n_features")
        est = cls(**doc.get("params", {}))
        for name in cls._state_arrays:
            setattr(est, name, arrays[name])
        est.classes_ = np.asarray(classes)
        est.n_features_in_ = int(n_features)
        return est
