"""The page's 2-D map of a store: PCA computed from the vectors streamed in chunks (two passes:
mean and covariance, then projection), so memory is one chunk plus a dim x dim matrix however
many items there are. At most `max_points` items are placed (an even, seeded sample)."""

from __future__ import annotations

import numpy as np

MAX_POINTS = 5000


def pca_map(rows, max_points: int = MAX_POINTS, seed: int = 0) -> dict:
    n, d = len(rows), rows.dim
    if n == 0:
        return {"points": [], "explained": [0.0, 0.0], "sampled": False, "items": 0}
    s = np.zeros(d, np.float64)
    C = np.zeros((d, d), np.float64)
    for _, X in rows.chunks():
        X = X.astype(np.float64)
        s += X.sum(0)
        C += X.T @ X
    mean = s / n
    cov = C / n - np.outer(mean, mean)
    w, V = np.linalg.eigh(cov)
    order = np.argsort(w)[::-1][:2]
    W = V[:, order]
    if W.shape[1] < 2:
        W = np.pad(W, ((0, 0), (0, 2 - W.shape[1])))
    W *= np.where(W.sum(0) < 0, -1, 1)  # a fixed sign, so the map does not flip between runs
    total = float(max(w.sum(), 1e-12))
    explained = [float(max(w[i], 0) / total) for i in order] + [0.0] * (2 - len(order))
    mask = None
    if n > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))
        mask = np.zeros(n, bool)
        mask[keep] = True
    points = []
    for pos, X in rows.chunks(mask):
        P = (X.astype(np.float64) - mean) @ W
        for j, (x, y) in zip(pos, P):
            points.append({"id": str(rows.ids[j]), "label": str(rows.labels[j]), "split": str(rows.splits[j]),
                           "x": round(float(x), 5), "y": round(float(y), 5)})
    return {"points": points, "explained": explained, "sampled": mask is not None, "items": n}
