"""Multinomial (or binomial) L2 logistic regression by full-batch L-BFGS in torch.

It minimises scikit-learn's objective exactly: mean log loss + ||W||^2 / (2 C n), intercept
unpenalised. Two things make it fast enough to sweep C: the problem is solved in preconditioned
coordinates (W = V M with M = (s Cov + lambda I)^-1/2 on centred features, which makes the
Hessian close to the identity at every C, so L-BFGS needs tens of iterations, not hundreds), and
warm starts along the C path. Data come as chunks, so the same code trains out of core.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

Chunks = Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]  # () -> iterator of (X float32, y_idx)


@dataclass
class FeatureStats:
    n: int
    mean: object  # torch (d,)
    eigvals: object  # torch (d,) of the covariance
    eigvecs: object  # torch (d, d)


class TensorChunks:
    """Chunks as torch tensors on the solver's device; a single in-memory chunk is converted once."""

    def __init__(self, chunks: Chunks, device, dtype, cache: bool):
        self.chunks, self.device, self.dtype, self.cache = chunks, device, dtype, cache
        self._cached = None

    def _convert(self, X, y):
        import torch

        return (torch.as_tensor(X, device=self.device).to(self.dtype), torch.as_tensor(y, device=self.device).long())

    def __iter__(self):
        if not self.cache:
            return (self._convert(X, y) for X, y in self.chunks())
        if self._cached is None:
            self._cached = [self._convert(X, y) for X, y in self.chunks()]
        return iter(self._cached)


def feature_stats(data: TensorChunks, n: int, max_rows: int = 8192) -> FeatureStats:
    """Mean and covariance eigendecomposition of (up to `max_rows` of) the features.

    They only shape the preconditioner and the centring, never the solution, so a sample will do."""
    import torch

    rows = []
    got = 0
    for X, _ in data:
        rows.append(X[: max_rows - got].float())
        got += len(rows[-1])
        if got >= max_rows:
            break
    S = torch.cat(rows)
    mean = S.mean(0)
    Sc = S - mean
    cov = (Sc.T @ Sc) / len(S)
    e, U = torch.linalg.eigh(cov.double())
    return FeatureStats(n, mean, e.clamp_min(0).float(), U.float())


def solve_logistic(data: TensorChunks, stats: FeatureStats, n_outputs: int, C: float, init=None,
                   tol: float = 1e-4, max_iter: int = 1000, class_weights=None) -> tuple[np.ndarray, np.ndarray, int]:
    """Fit W (n_outputs, d), b (n_outputs,); n_outputs 1 means binomial. Returns (W, b, n_iter).
    `class_weights` (one per class) multiply each item's loss, as scikit-learn's class_weight does."""
    import torch
    import torch.nn.functional as F

    dev = stats.mean.device
    n, d = stats.n, stats.mean.shape[0]
    lam = 1.0 / (C * n)
    curv = 0.25 if n_outputs == 1 else 1.0 / (n_outputs + 1)  # rough Hessian scale of the loss
    e = curv * stats.eigvals
    floor = max(lam, 1e-6 * float(e.max()) + 1e-12)
    U = stats.eigvecs
    M = (U * (e + floor).rsqrt()) @ U.T
    Minv = (U * (e + floor).sqrt()) @ U.T
    if init is None:
        V = torch.zeros(n_outputs, d, device=dev)
        c = torch.zeros(n_outputs, device=dev)
    else:
        W0 = torch.as_tensor(init[0], dtype=torch.float32, device=dev)
        V = W0 @ Minv
        c = torch.as_tensor(init[1], dtype=torch.float32, device=dev) + W0 @ stats.mean
    V.requires_grad_(True)
    c.requires_grad_(True)
    opt = torch.optim.LBFGS([V, c], lr=1, max_iter=max_iter, tolerance_grad=tol, tolerance_change=1e-10,
                            history_size=10, line_search_fn="strong_wolfe")

    cw = None if class_weights is None else torch.as_tensor(np.asarray(class_weights), dtype=torch.float32, device=dev)

    def closure():
        # Gradients w.r.t. W and b chunk by chunk, then chained to (V, c): W = V M, b = c - W mean.
        with torch.no_grad():
            W = V @ M
            b = c - W @ stats.mean
        W.requires_grad_(True)
        b.requires_grad_(True)
        total = 0.5 * lam * (W * W).sum()
        total.backward()
        total = total.detach()
        for X, y in data:  # one chunk in memory; many when streaming from a store
            z = (X @ W.T.to(X.dtype)).float() + b
            if n_outputs == 1:
                loss = F.binary_cross_entropy_with_logits(z[:, 0], y.float(), weight=None if cw is None else cw[y],
                                                          reduction="sum") / n
            else:
                loss = F.cross_entropy(z, y, weight=cw, reduction="sum") / n
            loss.backward()
            total = total + loss.detach()
        with torch.no_grad():
            V.grad = (W.grad - torch.outer(b.grad, stats.mean)) @ M
            c.grad = b.grad.clone()
        return total

    opt.step(closure)
    # the true count: 0 when the start already met the tolerance (the caller says so, never hides it)
    n_iter = int(opt.state[opt._params[0]].get("n_iter", 0))
    with torch.no_grad():
        W = V @ M
        b = c - W @ stats.mean
    return W.cpu().numpy().astype(np.float32), b.cpu().numpy().astype(np.float32), n_iter
