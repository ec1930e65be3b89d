"""Multinomial (or binomial) L2 logistic regression by full-batch L-BFGS in torch.

It minimises scikit-learn's objective exactly: mean log loss + ||W||^2 / (2 C n), intercept
unpenalised. With a prior (W0, b0), e.g. a CLIP zero-shot head, the penalty becomes
(||W - W0||^2 + ||b - b0||^2) / (2 C n): the probe is pulled toward the prior instead of toward 0,
the intercept too, so that C -> 0 gives back the prior itself and C -> inf the plain probe. Two things make it fast enough to sweep C: the problem is solved in preconditioned
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
                   tol: float = 1e-4, max_iter: int = 1000, class_weights=None, prior=None) -> tuple[np.ndarray, np.ndarray, int]:
    """Fit W (n_outputs, d), b (n_outputs,); n_outputs 1 means binomial. Returns (W, b, n_iter).
    `class_weights` (one per class) multiply each item's loss, as scikit-learn's class_weight does.
    `prior` (W0, b0) of the same shapes: penalise the distance to it (W and b) instead of ||W||;
    without `init`, the solver starts from it."""
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
    W0 = b0 = None
    rb = 1.0  # the intercept's scale: with a prior it is penalised too, so its curvature grows with lam
    if prior is not None:
        W0 = torch.as_tensor(np.asarray(prior[0]), dtype=torch.float32, device=dev).reshape(n_outputs, d)
        b0 = torch.as_tensor(np.asarray(prior[1]), dtype=torch.float32, device=dev).reshape(n_outputs)
        init = init if init is not None else (prior[0], prior[1])
        rb = float((curv + lam) ** -0.5)
    if init is None:
        V = torch.zeros(n_outputs, d, device=dev)
        u = torch.zeros(n_outputs, device=dev)
    else:
        Wi = torch.as_tensor(np.asarray(init[0]), dtype=torch.float32, device=dev)
        V = Wi @ Minv
        u = (torch.as_tensor(np.asarray(init[1]), dtype=torch.float32, device=dev) + Wi @ stats.mean) / rb
    V.requires_grad_(True)
    u.requires_grad_(True)
    opt = torch.optim.LBFGS([V, u], lr=1, max_iter=max_iter, tolerance_grad=tol, tolerance_change=1e-10,
                            history_size=10, line_search_fn="strong_wolfe")

    cw = None if class_weights is None else torch.as_tensor(np.asarray(class_weights), dtype=torch.float32, device=dev)

    def closure():
        # Gradients w.r.t. W and b chunk by chunk, then chained to (V, u): W = V M, b = rb u - W mean.
        with torch.no_grad():
            W = V @ M
            b = rb * u - W @ stats.mean
        W.requires_grad_(True)
        b.requires_grad_(True)
        if W0 is None:
            total = 0.5 * lam * (W * W).sum()
        else:
            total = 0.5 * lam * (((W - W0) ** 2).sum() + ((b - b0) ** 2).sum())
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
            u.grad = rb * b.grad
        return total

    opt.step(closure)
    # the true count: 0 when the start already met the tolerance (the caller says so, never hides it)
    n_iter = int(opt.state[opt._params[0]].get("n_iter", 0))
    with torch.no_grad():
        W = V @ M
        b = rb * u - W @ stats.mean
    return W.cpu().numpy().astype(np.float32), b.cpu().numpy().astype(np.float32), n_iter
