"""Logistic regression (multinomial, L2) head: scikit-learn's lbfgs in memory, torch L-BFGS at scale.

Small in-memory data go to scikit-learn's own LogisticRegression (fastest there, and the
reference everyone trusts). The torch solver (lbfgs.py, same objective, preconditioned) is kept
for what scikit-learn cannot do: vectors streamed from the store (out of core), a GPU, and large
in-memory problems where its preconditioning beats plain lbfgs. `choose_solver` decides, and says why.
"""

from __future__ import annotations

import warnings

import numpy as np

from .base import Head, blas_threads, scores_to_proba
from .lbfgs import Chunks, TensorChunks, feature_stats, solve_logistic

PRECISIONS = ("fp32", "bf16")
SOLVERS = ("auto", "sklearn", "torch")
# Above this many feature values (rows x dims) held in memory, the preconditioned torch solver
# beats scikit-learn's lbfgs on CPU (measured in benchmarks/bench_heads.py: 10k x 256 favours
# scikit-learn, 50k x 512 favours torch).
SKLEARN_MAX_VALUES = 8_000_000


def choose_solver(solver: str, n: int, d: int, device: str, in_memory: bool) -> tuple[str, str]:
    """("sklearn" | "torch", the path in words) for `n` x `d` training vectors."""
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, not {solver!r}")
    dev = str(device)
    if solver == "auto":
        if not in_memory:
            solver = "torch"
        elif dev.startswith("cuda"):
            solver = "torch"
        else:
            solver = "sklearn" if n * d <= SKLEARN_MAX_VALUES else "torch"
    if solver == "sklearn":
        if not in_memory:
            raise ValueError("solver='sklearn' needs the vectors in memory; raise --max-memory or use solver=torch")
        return "sklearn", f"scikit-learn lbfgs in memory ({n} x {d})"
    where = "streaming from the store" if not in_memory else "in memory"
    return "torch", f"torch L-BFGS, {where}, on {dev} ({n} x {d})"


def check_class_weight(value, classes=None):
    """scikit-learn's class_weight: None (every item counts once), "balanced" (items weighted
    n / (K * class count)) or {class label: weight}; with `classes`, returns it keyed by class index."""
    if value is None or value == "balanced":
        return value
    if not isinstance(value, dict):
        raise ValueError(f"class_weight must be None, 'balanced' or a dict of class -> weight, not {value!r}")
    if classes is None:
        return value
    return {k: float(value.get(c, value.get(str(c), 1.0))) for k, c in enumerate(classes)}


class LogisticHead(Head):
    """L2-regularised logistic regression with scikit-learn's objective and meaning of C.

    `solver="auto"` uses scikit-learn's lbfgs for in-memory CPU data up to SKLEARN_MAX_VALUES
    feature values and the torch solver otherwise (streaming, cuda, large). `precision="bf16"`
    (torch only) holds the features in bfloat16 for the products (used for the sweep, never the
    final fit). `warm_start=True` starts from the previous solution: that is how the C sweep stays cheap.
    `class_weight="balanced"` weights each item by n / (K * its class's count) ({label: weight} also works), on either solver.
    `n_iter_` is the solver's true iteration count (0 when a warm start already met the tolerance).
    """

    kind = "logistic"
    sweep_param = "C"
    sweep_grid = tuple(float(f"{c:.3g}") for c in np.logspace(-4, 4, 9))
    streams = True
    _state_arrays = ("coef_", "intercept_")

    def __init__(self, C: float = 1.0, tol: float = 1e-4, max_iter: int = 1000, warm_start: bool = False,
                 precision: str = "fp32", device: str = "cpu", solver: str = "auto", class_weight: str | None = None):
        self.class_weight = class_weight
        self.C = C
        self.tol = tol
        self.max_iter = max_iter
        self.warm_start = warm_start
        self.precision = precision
        self.device = device
        self.solver = solver

    def _validate_params_(self) -> None:
        if not (isinstance(self.C, (int, float)) and self.C > 0):
            raise ValueError(f"C must be a positive number, not {self.C!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {self.precision!r}")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, not {self.solver!r}")
        check_class_weight(self.class_weight)

    def _fit(self, X: np.ndarray, y_idx: np.ndarray) -> None:
        self._fit_chunks(lambda: [(X, y_idx)], cache=True)

    def fit_chunks(self, chunks: Chunks, classes: np.ndarray, n_features: int, in_memory: bool = False, stats=None,
                   prior=None):
        """Train from a re-iterable stream of (X, y_idx) chunks; `in_memory=False` streams them
        afresh on every pass (out of core). `stats` (from a previous fit on the same data) saves a pass.

        `prior` (coef, intercept) in this head's shapes ((1, d) and (1,) for two classes, else
        (K, d) and (K,) in `classes` order), e.g. a zero-shot head's weights: the penalty is
        (||W - W0||^2 + ||b - b0||^2) / (2 C n) instead of ||W||^2 / (2 C n), so a small C keeps
        the prior and a large one the plain probe; it needs the torch solver (scikit-learn's has no
        such term) and, without a warm start, starts there."""
        self.classes_ = np.asarray(classes)
        self.n_features_in_ = int(n_features)
        self._fit_chunks(chunks, cache=in_memory, stats=stats, prior=prior)
        return self

    def _init(self, n_out: int):
        if self.warm_start and hasattr(self, "coef_") and np.shape(self.coef_) == (n_out, self.n_features_in_):
            return self.coef_, self.intercept_
        return None

    def _fit_chunks(self, chunks: Chunks, cache: bool, stats=None, prior=None) -> None:
        self._validate_params_()
        n_out = 1 if len(self.classes_) == 2 else len(self.classes_)
        n = sum(len(y) for _, y in chunks())
        solver = self.solver
        if prior is not None:
            if solver == "sklearn":
                raise ValueError("a prior (e.g. --init zero-shot) needs solver='torch' or 'auto': scikit-learn's "
                                 "LogisticRegression has no pull-toward-prior penalty")
            W0, b0 = np.asarray(prior[0], dtype=np.float32), np.asarray(prior[1], dtype=np.float32)
            if W0.shape != (n_out, self.n_features_in_) or b0.shape != (n_out,):
                raise ValueError(f"prior has shapes {W0.shape} and {b0.shape}; this head needs "
                                 f"({n_out}, {self.n_features_in_}) and ({n_out},)")
            prior, solver = (W0, b0), "torch"
        dev = self.device
        if solver != "sklearn" and (solver == "torch" or str(dev) != "cpu"):
            from ..embedding.device import resolve_device

            dev = str(resolve_device(dev))
        which, self.fit_path_ = choose_solver(solver, n, self.n_features_in_, dev, cache)
        if which == "sklearn":
            X, y = next(iter(chunks())) if cache else (None, None)
            self._fit_sklearn(X, y, n_out)
        else:
            self._fit_torch(chunks, cache, stats, n, n_out, dev, prior)
            if prior is not None:
                self.fit_path_ += "; penalty ||W - W0||^2 + ||b - b0||^2 toward the given prior"
        if self.n_iter_ >= self.max_iter:
            from sklearn.exceptions import ConvergenceWarning

            warnings.warn(f"L-BFGS did not converge in {self.max_iter} iterations at C={self.C:g}; raise max_iter",
                          ConvergenceWarning)

    def _fit_sklearn(self, X: np.ndarray, y_idx: np.ndarray, n_out: int) -> None:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        init = self._init(n_out)
        lr = LogisticRegression(C=float(self.C), tol=self.tol, max_iter=self.max_iter, warm_start=init is not None,
                                class_weight=check_class_weight(self.class_weight, self.classes_))
        if init is not None:
            lr.coef_ = np.asarray(init[0], dtype=X.dtype)
            lr.intercept_ = np.asarray(init[1], dtype=X.dtype)
        with warnings.catch_warnings(), blas_threads(X.size):
            warnings.simplefilter("ignore", ConvergenceWarning)  # said once, by _fit_chunks, with the C
            lr.fit(X, y_idx)  # float32 stays float32: scikit-learn's lbfgs runs in it, twice as fast
        self.coef_ = lr.coef_.astype(np.float32)
        self.intercept_ = lr.intercept_.astype(np.float32)
        self.n_iter_ = int(np.max(lr.n_iter_))

    def _fit_torch(self, chunks: Chunks, cache: bool, stats, n: int, n_out: int, dev: str, prior=None) -> None:
        import torch

        dev = torch.device(dev)
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
        data = TensorChunks(chunks, dev, dtype, cache)
        stats = stats or getattr(self, "stats_", None)  # only shapes the preconditioner: reuse is safe
        if stats is None or stats.mean.device != dev or stats.n != n or stats.mean.shape[0] != self.n_features_in_:
            stats = feature_stats(TensorChunks(chunks, dev, torch.float32, cache=False), n)
        self.stats_ = stats
        weights = None
        if self.class_weight == "balanced":  # scikit-learn's: n / (K * count of the class)
            counts = np.zeros(len(self.classes_))
            for _, y in chunks():
                counts += np.bincount(np.asarray(y, dtype=np.int64), minlength=len(self.classes_))
            weights = counts.sum() / (len(self.classes_) * np.maximum(counts, 1))
        elif isinstance(self.class_weight, dict):
            by_idx = check_class_weight(self.class_weight, self.classes_)
            weights = np.array([by_idx[k] for k in range(len(self.classes_))])
        self.coef_, self.intercept_, self.n_iter_ = solve_logistic(
            data, stats, n_out, float(self.C), init=self._init(n_out), tol=self.tol, max_iter=self.max_iter,
            class_weights=weights, prior=prior)

    def _scores(self, X: np.ndarray) -> np.ndarray:
        s = np.asarray(X, dtype=np.float64) @ self.coef_.T.astype(np.float64) + self.intercept_
        return s[:, 0] if s.shape[1] == 1 else s

    def _proba(self, scores: np.ndarray) -> np.ndarray:
        # a temperature `fit_head` fits on held-out folds when cross-validation keeps a strongly
        # regularised C (separable classes: right on every item, probabilities near uniform); 1 otherwise
        return scores_to_proba(scores / float(getattr(self, "temperature_", 1.0)))

    def state_fields(self) -> dict:
        t = float(getattr(self, "temperature_", 1.0))
        return {**super().state_fields(), **({"temperature": t, "calibrated_on": str(self.calibrated_on_)} if t != 1.0 else {})}

    @classmethod
    def from_state(cls, doc: dict, arrays: dict) -> "Head":
        est = super().from_state(doc, arrays)
        t = doc.get("temperature", 1.0)  # heads saved before it, or without one: 1
        if not isinstance(t, (int, float)) or isinstance(t, bool) or not (0 < float(t) < float("inf")):
            raise ValueError(f"temperature {t!r} is not a positive finite number")
        est.temperature_ = float(t)
        if "calibrated_on" in doc:
            est.calibrated_on_ = str(doc["calibrated_on"])
        return est

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("stats_", None)  # torch tensors: a cache for warm starts, not part of the model
        return state
