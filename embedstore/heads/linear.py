"""Linear SVM and ridge heads: linear scores, probabilities by a temperature-scaled softmax whose
temperature is fitted on held-out rows (the validation split, or out-of-fold scores), never on the
rows the scores were trained on: margins on training rows are over-confident by construction."""

from __future__ import annotations

import numpy as np

from .base import Head, fit_temperature, scores_to_proba
from .lbfgs import Chunks

CALIBRATIONS = ("cv", "given")
CV_FOLDS = 3
OLD_CALIBRATION = "the training rows (saved by an older embedstore: refit for held-out calibration)"


class _LinearHead(Head):
    """`calibration="cv"`: `fit` fits the temperature on out-of-fold scores (3-fold, each fold
    scored by a model that never saw it). `calibration="given"`: `fit` leaves the temperature at 1 and
    the caller calibrates on held-out rows with `calibrate` (what `fit_head` does with the validation split)."""

    _state_arrays = ("coef_", "intercept_", "temperature_")

    def _scores(self, X: np.ndarray) -> np.ndarray:
        s = np.asarray(X, dtype=np.float64) @ self.coef_.T.astype(np.float64) + self.intercept_
        return s[:, 0] if s.shape[1] == 1 else s

    def _proba(self, scores: np.ndarray) -> np.ndarray:
        return scores_to_proba(scores / float(self.temperature_))

    def _fit(self, X: np.ndarray, y_idx: np.ndarray) -> None:
        calibration = getattr(self, "calibration", "cv")
        if calibration not in CALIBRATIONS:
            raise ValueError(f"calibration must be one of {CALIBRATIONS}, not {calibration!r}")
        self._fit_linear(X, y_idx)
        self.temperature_ = np.float64(1.0)
        self.calibrated_on_ = "nothing yet (temperature 1): call calibrate() on held-out rows"
        if calibration == "cv":
            self._calibrate_out_of_fold(X, y_idx)

    def _fit_linear(self, X: np.ndarray, y_idx: np.ndarray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _calibrate_out_of_fold(self, X: np.ndarray, y_idx: np.ndarray) -> None:
        """Temperature from out-of-fold scores: each row scored by a model fitted without it."""
        from sklearn.base import clone

        from ..evaluation.folds import stratified_folds

        folds = stratified_folds(y_idx, seed=0, k=CV_FOLDS)
        if not folds:
            self.calibrated_on_ = "nothing (a class has fewer than 2 items: no held-out rows; temperature 1)"
            return
        oof = np.zeros((len(X),) if len(self.classes_) == 2 else (len(X), len(self.classes_)))
        for tr, te in folds:
            part = clone(self)
            part.classes_ = self.classes_
            part._fit_linear(X[tr], y_idx[tr])
            oof[te] = part._scores(X[te])
        self.temperature_ = np.float64(fit_temperature(oof, y_idx))
        self.calibrated_on_ = f"out-of-fold scores ({len(folds)}-fold over the {len(X)} training rows)"

    def calibrate(self, X, y, what: str = "held-out rows"):
        """Fit the temperature on held-out (X, y): rows this head was not trained on."""
        X = self._check(X)
        pos = {c: k for k, c in enumerate(self.classes_)}
        y_idx = np.array([pos.get(v, -1) for v in np.asarray(y)])
        return self.calibrate_chunks(lambda: [(X, y_idx)], what)

    def calibrate_chunks(self, chunks: Chunks, what: str = "held-out rows"):
        """As `calibrate`, from a stream of (X, y_idx) chunks; rows of unknown classes (y_idx < 0) are skipped."""
        scores, ys = [], []
        for X, y in chunks():
            keep = np.asarray(y) >= 0
            if keep.any():
                scores.append(self._scores(np.asarray(X)[keep]))
                ys.append(np.asarray(y)[keep])
        if not ys:
            raise ValueError("no held-out rows of known classes to calibrate on")
        y = np.concatenate(ys)
        self.temperature_ = np.float64(fit_temperature(np.concatenate(scores), y))
        self.calibrated_on_ = f"{what} (n={len(y)})"
        return self

    def state_fields(self) -> dict:
        return {**super().state_fields(), "calibrated_on": str(getattr(self, "calibrated_on_", OLD_CALIBRATION))}

    @classmethod
    def from_state(cls, doc: dict, arrays: dict) -> "Head":
        est = super().from_state(doc, arrays)
        est.calibrated_on_ = str(doc.get("calibrated_on", OLD_CALIBRATION))
        return est


class LinearSVMHead(_LinearHead):
    """Linear SVM (squared hinge, L2; scikit-learn's LinearSVC), one-vs-rest."""

    kind = "linear-svm"
    sweep_param = "C"
    sweep_grid = tuple(float(f"{c:.3g}") for c in np.logspace(-4, 3, 8))

    def __init__(self, C: float = 1.0, tol: float = 1e-4, max_iter: int = 2000, random_state=0,
                 calibration: str = "cv", class_weight: str | None = None):
        self.class_weight = class_weight
        self.C = C
        self.tol = tol
        self.max_iter = max_iter
        self.random_state = random_state
        self.calibration = calibration

    def _fit_linear(self, X: np.ndarray, y_idx: np.ndarray) -> None:
        from sklearn.svm import LinearSVC
        from sklearn.utils import check_random_state

        from .logistic import check_class_weight

        svc = LinearSVC(C=self.C, tol=self.tol, max_iter=self.max_iter, dual="auto",
                        class_weight=check_class_weight(self.class_weight, self.classes_),
                        random_state=check_random_state(self.random_state).randint(2**31 - 1))
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # reported once below, with the C
            svc.fit(X, y_idx)
        self.coef_ = svc.coef_.astype(np.float32)
        self.intercept_ = svc.intercept_.astype(np.float32)
        self.n_iter_ = int(svc.n_iter_)
        self.fit_path_ = f"scikit-learn LinearSVC (liblinear) in memory ({len(X)} x {X.shape[1]})"
        if self.n_iter_ >= self.max_iter:
            warnings.warn(f"LinearSVC did not converge in {self.max_iter} iterations at C={self.C:g}; raise max_iter",
                          ConvergenceWarning)


class RidgeHead(_LinearHead):
    """Ridge classifier: least squares on +-1 targets, one column per class (scikit-learn's
    RidgeClassifier). Closed form from X'X, so it trains out of core in one pass and a sweep
    over alpha costs one eigendecomposition."""

    kind = "ridge"
    sweep_param = "alpha"
    sweep_grid = tuple(float(f"{a:.3g}") for a in np.logspace(-4, 4, 9))
    streams = True

    def __init__(self, alpha: float = 1.0, calibration: str = "cv"):
        self.alpha = alpha
        self.calibration = calibration

    def _fit_linear(self, X: np.ndarray, y_idx: np.ndarray) -> None:
        self._solve(gram_stats(lambda: [(X, y_idx)], len(self.classes_)))
        self.fit_path_ = f"closed form (float64 decomposition) in memory ({len(X)} x {X.shape[1]})"

    def fit_chunks(self, chunks: Chunks, classes: np.ndarray, n_features: int, in_memory: bool = False, stats=None):
        """Train from a stream of (X, y_idx) chunks in one pass (`stats` from `gram_stats` saves it).
        Calibration is left to the caller: `calibrate_chunks` on held-out chunks (temperature 1 until then)."""
        self.classes_ = np.asarray(classes)
        self.n_features_in_ = int(n_features)
        g = stats or gram_stats(chunks, len(self.classes_))
        self._solve(g)
        self.temperature_ = np.float64(1.0)
        self.calibrated_on_ = "nothing yet (temperature 1): call calibrate() on held-out rows"
        where = "in memory" if in_memory else "streaming from the store"
        self.fit_path_ = f"closed form (float64 decomposition), {where} ({g['n']} x {n_features})"
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
    last = None
    for X, y in chunks():
        X = last = np.asarray(X, dtype=np.float64)
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
    xyc = xy - n * np.outer(xmean, ymean)
    if last is not None and n == len(last) and n < last.shape[1]:
        # one in-memory chunk with fewer rows than dims: the thin SVD of the centred rows gives the
        # same solution (X'Y lies in their row space) at n^2 d instead of d^3 (scikit-learn's "svd")
        _, sv, Vt = np.linalg.svd(last - xmean, full_matrices=False)
        return {"eig": (sv**2, Vt.T), "xty": xyc, "xmean": xmean, "ymean": ymean, "n": n}
    xxc = xx - n * np.outer(xmean, xmean)
    e, U = np.linalg.eigh((xxc + xxc.T) / 2)
    return {"eig": (np.clip(e, 0, None), U), "xty": xyc, "xmean": xmean, "ymean": ymean, "n": n}
