"""Logistic regression (multinomial, L2) head, solved by preconditioned L-BFGS in torch."""

from __future__ import annotations

import numpy as np

from .base import Head
from .lbfgs import Chunks, TensorChunks, feature_stats, solve_logistic

PRECISIONS = ("fp32", "bf16")


class LogisticHead(Head):
    """L2-regularised logistic regression with scikit-learn's objective and meaning of C.

    `precision="bf16"` holds the features in bfloat16 for the matrix products (half the memory
    traffic; used for the validation sweep, never for the final fit). `warm_start=True` starts
    from the previous solution, which is how the C sweep stays cheap.
    """

    kind = "logistic"
    sweep_param = "C"
    sweep_grid = tuple(float(f"{c:.3g}") for c in np.logspace(-4, 4, 9))
    streams = True
    _state_arrays = ("coef_", "intercept_")

    def __init__(self, C: float = 1.0, tol: float = 1e-4, max_iter: int = 1000, warm_start: bool = False,
                 precision: str = "fp32", device: str = "cpu"):
        self.C = C
        self.tol = tol
        self.max_iter = max_iter
        self.warm_start = warm_start
        self.precision = precision
        self.device = device

    def _validate_params_(self) -> None:
        if not (isinstance(self.C, (int, float)) and self.C > 0):
            raise ValueError(f"C must be a positive number, not {self.C!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {self.precision!r}")

    def _fit(self, X: np.ndarray, y_idx: np.ndarray) -> None:
        self._fit_chunks(lambda: [(X, y_idx)], cache=True)

    def fit_chunks(self, chunks: Chunks, classes: np.ndarray, n_features: int, in_memory: bool = False, stats=None):
        """Train from a re-iterable stream of (X, y_idx) chunks; `in_memory=False` streams them
        afresh on every pass (out of core). `stats` (from a previous fit on the same data) saves a pass."""
        self.classes_ = np.asarray(classes)
        self.n_features_in_ = int(n_features)
        self._fit_chunks(chunks, cache=in_memory, stats=stats)
        return self

    def _fit_chunks(self, chunks: Chunks, cache: bool, stats=None) -> None:
        import torch

        self._validate_params_()
        from ..embedding.device import resolve_device

        dev = resolve_device(self.device)
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
        data = TensorChunks(chunks, dev, dtype, cache)
        n = sum(len(y) for _, y in chunks()) if not cache else len(next(iter(chunks()))[1])
        stats = stats or getattr(self, "stats_", None)  # only shapes the preconditioner: reuse is safe
        if stats is None or stats.mean.device != dev or stats.n != n or stats.mean.shape[0] != self.n_features_in_:
            stats = feature_stats(TensorChunks(chunks, dev, torch.float32, cache=False), n)
        self.stats_ = stats
        n_out = 1 if len(self.classes_) == 2 else len(self.classes_)
        init = None
        if self.warm_start and hasattr(self, "coef_") and self.coef_.shape == (n_out, self.n_features_in_):
            init = (self.coef_, self.intercept_)
        self.coef_, self.intercept_, self.n_iter_ = solve_logistic(
            data, stats, n_out, float(self.C), init=init, tol=self.tol, max_iter=self.max_iter)

    def _scores(self, X: np.ndarray) -> np.ndarray:
        s = np.asarray(X, dtype=np.float64) @ self.coef_.T.astype(np.float64) + self.intercept_
        return s[:, 0] if s.shape[1] == 1 else s

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("stats_", None)  # torch tensors: a cache for warm starts, not part of the model
        return state
