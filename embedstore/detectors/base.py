"""The common shape of a detector: scikit-learn's outlier API over arrays.

`score_samples` is higher for more normal items (lower = more abnormal) and treats X as new items;
`decision_function = score_samples - offset_`; `predict` is +1 / -1. Every detector is a novelty
detector (like LocalOutlierFactor(novelty=True)): its threshold is set for items it did not see.

Calibration: `fit_scores_` are the fit set's held-out scores, each item scored by a model that was
not fitted on it (K-fold cross-fitting; exact leave-one-out where that is free, as for kNN), and
`offset_` is their `contamination` quantile. So `--contamination 0.05` flags about 5% of new
normal items, the fit items' own labels are `fit_scores_ - offset_`, and `percentile` ranks a score
against scores of the same kind. Calibrating on in-sample scores instead (what Mahalanobis, PCA and
one-class SVM did before) puts the threshold inside the fit set's overfitted scores: 22%, 28% and
15% of new normal items were flagged for a 5% contamination on a 64-d Gaussian with 600 fit items.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin, clone
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted, validate_data

FLOATS = [np.float32, np.float64]
MIN_FOLDS, MAX_FOLDS = 5, 20
FOLD_BUDGET = 20_000  # fold count x fit items: 20 folds up to 1,000 items, 5 from 4,000 up
FOLD_SEED = 0


def n_folds(n: int) -> int:
    """Cross-fitting folds for n fit items: many where they are cheap and matter, few where they cost.

    A fold model sees (K-1)/K of the fit set. The smaller the set, the more a model fitted on 80% of
    it overfits less data than the final model (Mahalanobis and PCA worst, as dimension / n grows),
    so its held-out scores look more abnormal and the threshold flags too few new normal items
    (256-d Gaussian, 900 items: 1.4% at 5 folds, 3.4% at 20, for a 5% target; 96% before any
    cross-fitting); and the cheaper each fit is.
    Large sets get 5 folds: an 80% model of thousands of items scores like the full one."""
    return int(min(n, max(MIN_FOLDS, min(MAX_FOLDS, FOLD_BUDGET // max(n, 1)))))


def cross_fit_folds(n: int, k: int | None = None) -> np.ndarray:
    """The fold (0..k-1) of each of n fit items: a seeded shuffle dealt round-robin, so fold sizes
    differ by at most one and a fit set sorted by label or time is still mixed."""
    k = n_folds(n) if k is None else k
    folds = np.empty(n, dtype=np.int64)
    folds[np.random.default_rng(FOLD_SEED).permutation(n)] = np.arange(n) % k
    return folds


def describe_calibration(cal: dict | None, contamination: float) -> str:
    """One line saying how the threshold was set, e.g. "5% of out-of-fold scores of 900 normal
    items (5-fold cross-fitting)"."""
    share = f"{100 * contamination:g}%"
    if not cal:  # saved before calibration was recorded: the old in-sample threshold
        return f"{share} of the fit set's own scores (saved by an older embedstore: may flag more new normal items)"
    n = cal["items"]
    if cal["method"] == "leave-one-out":
        return f"{share} of leave-one-out scores of {n} normal items (each scored against the other {n - 1})"
    return f"{share} of out-of-fold scores of {n} normal items ({cal['folds']}-fold cross-fitting)"


def _not_novelty(est) -> bool:
    return not est.novelty


class Detector(OutlierMixin, BaseEstimator):
    kind: ClassVar[str] = ""
    _state_arrays: ClassVar[tuple[str, ...]] = ()
    _min_samples: ClassVar[int] = 3  # cross-fitting needs each fold model fitted on at least 2 items
    novelty = True  # scikit-learn's marker: score_samples(X) treats X as new items

    def fit(self, X, y=None):
        X = validate_data(self, X, dtype=FLOATS)
        c = self.contamination
        if not (isinstance(c, (int, float)) and 0 < c <= 0.5):
            raise ValueError(f"contamination must be in (0, 0.5], not {c!r}")
        X = np.asarray(X, dtype=np.float32)
        if len(X) < self._min_samples:
            raise ValueError(f"{type(self).__name__} needs at least {self._min_samples} samples (its threshold is set on "
                             f"items a model was not fitted on); got n_samples = {len(X)}")
        scores, cal = self._held_out_scores(X)
        self._fit(X)  # the model that scores new items: fitted on everything
        self.fit_scores_ = np.asarray(scores, dtype=np.float64)
        self.offset_ = float(np.percentile(self.fit_scores_, 100.0 * c))
        self.calibration_ = {**cal, "items": int(len(X))}
        return self

    def _fit(self, X: np.ndarray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _score(self, X: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _held_out_scores(self, X: np.ndarray) -> tuple[np.ndarray, dict]:
        """Each fit item's score from a model not fitted on it, by K-fold cross-fitting.

        Why cross-fitting rather than one held-out part: every fit item gets an honest score (the
        store's own ranking uses them, and a held-out part would either shrink the final fit or leave
        most fit items with in-sample scores), and the threshold rests on all n items, not n/5. Folds:
        `n_folds` (20 for small sets, 5 from 4,000 items up), fitted one at a time, so peak memory is
        the fit set plus one fold's copy of (K-1)/K of it, whatever K. No subsampling: the extra fits
        are linear in n for Mahalanobis and PCA, bounded by the method's own subsample for isolation
        forest (max_samples) and one-class SVM (max_fit), free for kNN (exact leave-one-out); only
        LOF, already quadratic in n, pays about 4x its fit on large sets."""
        folds = cross_fit_folds(len(X))
        k = int(folds.max()) + 1
        scores = np.empty(len(X))
        for f in range(k):
            hold = folds == f
            scores[hold] = self._fold_scores(X[~hold], X[hold])
        return scores, {"method": "cross-fit", "folds": k}

    def _fold_scores(self, fit: np.ndarray, held: np.ndarray) -> np.ndarray:
        """One fold of the cross-fitting: `held`'s scores from a model fitted on `fit` alone."""
        model = clone(self)
        model._fit(fit)
        return model._score(held)

    def score_samples(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=FLOATS)
        return np.asarray(self._score(np.asarray(X, dtype=np.float32)), dtype=np.float64)

    def decision_function(self, X) -> np.ndarray:
        return self.score_samples(X) - self.offset_

    def predict(self, X) -> np.ndarray:
        return np.where(self.decision_function(X) >= 0, 1, -1)

    @available_if(_not_novelty)
    def fit_predict(self, X, y=None):  # pragma: no cover - hidden: `fit(X).predict(X)` scores X as new items
        """Hidden, as for LocalOutlierFactor(novelty=True): the fit set's labels are `fit_scores_ - offset_`."""
        self.fit(X)
        return np.where(self.fit_scores_ - self.offset_ >= 0, 1, -1)

    def percentile(self, scores: np.ndarray) -> np.ndarray:
        """Anomaly percentile against the fit set: the share (0-100) of fit items more normal than each score."""
        check_is_fitted(self)
        ref = np.sort(self.fit_scores_)
        return 100.0 * (len(ref) - np.searchsorted(ref, scores, side="right")) / len(ref)

    def threshold_description(self) -> str:
        check_is_fitted(self)
        return describe_calibration(getattr(self, "calibration_", None), self.contamination)

    def state_arrays(self) -> dict[str, np.ndarray]:
        check_is_fitted(self)
        return {n: np.asarray(getattr(self, n)) for n in self.state_array_names()}

    def state_fields(self) -> dict:
        return {"offset": float(self.offset_), "n_features": int(self.n_features_in_),
                "calibration": getattr(self, "calibration_", None)}

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
        est.calibration_ = doc.get("calibration")
        return est
