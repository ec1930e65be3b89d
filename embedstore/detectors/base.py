"""The common shape of a detector: scikit-learn's outlier API over arrays.

`score_samples` is higher for more normal items (lower = more abnormal); `decision_function =
score_samples - offset_`; `predict` is +1 / -1. `fit_scores_` are the fit set's own scores, with
an item never its own neighbour; the threshold `offset_` is their `contamination` quantile.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.utils.validation import check_is_fitted, validate_data

FLOATS = [np.float32, np.float64]


class Detector(OutlierMixin, BaseEstimator):
    kind: ClassVar[str] = ""
    _state_arrays: ClassVar[tuple[str, ...]] = ()

    def fit(self, X, y=None):
        X = validate_data(self, X, dtype=FLOATS)
        c = self.contamination
        if not (isinstance(c, (int, float)) and 0 < c <= 0.5):
            raise ValueError(f"contamination must be in (0, 0.5], not {c!r}")
        X = np.asarray(X, dtype=np.float32)
        self._fit(X)
        self.fit_scores_ = np.asarray(self._fit_scores(X), dtype=np.float64)
        self.offset_ = float(np.percentile(self.fit_scores_, 100.0 * c))
        return self

    def _fit(self, X: np.ndarray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _score(self, X: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _fit_scores(self, X: np.ndarray) -> np.ndarray:
        """Scores of the fit set itself; neighbour methods override this to leave each item out."""
        return self._score(X)

    def score_samples(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=FLOATS)
        return np.asarray(self._score(np.asarray(X, dtype=np.float32)), dtype=np.float64)

    def decision_function(self, X) -> np.ndarray:
        return self.score_samples(X) - self.offset_

    def predict(self, X) -> np.ndarray:
        return np.where(self.decision_function(X) >= 0, 1, -1)

    def fit_predict(self, X, y=None) -> np.ndarray:
        """Labels of the fit set from its own (leave-self-out) scores."""
        self.fit(X)
        return np.where(self.fit_scores_ - self.offset_ >= 0, 1, -1)

    def percentile(self, scores: np.ndarray) -> np.ndarray:
        """Anomaly percentile against the fit set: the share (0-100) of fit items more normal than each score."""
        check_is_fitted(self)
        ref = np.sort(self.fit_scores_)
        return 100.0 * (len(ref) - np.searchsorted(ref, scores, side="right")) / len(ref)

    def state_arrays(self) -> dict[str, np.ndarray]:
        check_is_fitted(self)
        return {n: np.asarray(getattr(self, n)) for n in self.state_array_names()}

    def state_fields(self) -> dict:
        return {"offset": float(self.offset_), "n_features": int(self.n_features_in_)}

    @classmethod
    def state_array_names(cls) -> tuple[str, ...]:
        return ("fit_scores_",) + cls._state_arrays

    @classmethod
    def from_state(cls, doc: dict, arrays: dict[str, np.ndarray]) -> "Detector":
        est = cls(**doc.get("params", {}))
        for n in cls.state_array_names():
            setattr(est, n, arrays[n])
        est.offset_ = float(doc["offset"])
        est.n_features_in_ = int(doc["n_features"])
        return est
