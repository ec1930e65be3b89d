"""Taste profiles from liked and disliked vectors, and MMR re-ranking. Arrays in, arrays out.

A profile is the mean of the liked items' L2-normalised vectors, minus `dislike_weight` times the
mean of the disliked ones (Rocchio's relevance feedback), normalised again. Varied tastes (a user
who likes both sevens and owls) average into a point between the clusters that resembles neither,
so the liked vectors are first split by spherical k-means when that split is clearly better than
one group (mean silhouette >= `SILHOUETTE_MIN`), and each cluster gets its own profile."""

from __future__ import annotations

import numpy as np

SILHOUETTE_MIN = 0.25  # below it, one mean profile: the liked items do not form separate groups
MAX_CLUSTERS = 5
CLUSTER_SAMPLE = 500  # above this many liked items, clusters are found on a sample (the silhouette is n x n)
MIN_NORM = 1e-6


def unit(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32).reshape(-1, np.shape(X)[-1])
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def spherical_kmeans(X: np.ndarray, c: int, seed: int = 0, iters: int = 25) -> np.ndarray:
    """Cluster labels of unit rows X into c groups by cosine (k-means++ seeding, fixed seed)."""
    rng = np.random.default_rng(seed)
    centres = [X[rng.integers(len(X))]]
    for _ in range(1, c):
        d = 1 - np.max(X @ np.stack(centres).T, axis=1)
        d = np.clip(d, 0, None)
        centres.append(X[rng.choice(len(X), p=d / d.sum())] if d.sum() > 0 else X[rng.integers(len(X))])
    C = np.stack(centres)
    labels = np.full(len(X), -1)
    eye = np.eye(c, dtype=X.dtype)
    for _ in range(iters):
        new = np.argmax(X @ C.T, axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
        S = eye[labels].T @ X  # (c, d) sums of each cluster's members; an empty cluster keeps its centre
        norms = np.linalg.norm(S, axis=1, keepdims=True)
        C = np.where(norms > 1e-12, S / np.maximum(norms, 1e-12), C)
    return labels


def silhouette(X: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette with cosine distance (0 for a point alone in its cluster, as scikit-learn)."""
    D = 1 - X @ X.T
    groups, lab = np.unique(labels, return_inverse=True)
    onehot = np.eye(len(groups))[lab]
    size = onehot.sum(axis=0)
    M = (D @ onehot) / size  # mean distance of each point to each cluster (own cluster: includes itself, D = 0)
    own = size[lab]
    a = M[np.arange(len(X)), lab] * own / np.maximum(own - 1, 1)
    M[np.arange(len(X)), lab] = np.inf
    b = M.min(axis=1)
    s = np.where(own > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-12), 0.0)
    return float(s.mean())


def cluster_liked(L: np.ndarray, clusters: int | None = None, seed: int = 0) -> np.ndarray:
    """Cluster labels of the liked unit vectors: `clusters` groups when given (1: one mean), else
    the count in 2..5 with the best silhouette when it reaches SILHOUETTE_MIN, else one group."""
    n = len(L)
    if n > CLUSTER_SAMPLE:  # many likes: cluster a seeded sample, then give every like its nearest centre
        pick = np.random.default_rng(seed).choice(n, CLUSTER_SAMPLE, replace=False)
        lab = cluster_liked(L[pick], clusters, seed)
        C = unit(np.stack([L[pick][lab == g].mean(axis=0) for g in np.unique(lab)]))
        return np.argmax(L @ C.T, axis=1)
    if clusters:  # 0, like None, chooses (the server's and the CLI's "automatic")
        c = max(1, min(int(clusters), n))
        return np.zeros(n, int) if c == 1 else spherical_kmeans(L, c, seed)
    if n < 4:
        return np.zeros(n, int)
    best, best_s = np.zeros(n, int), SILHOUETTE_MIN
    for c in range(2, min(MAX_CLUSTERS, n // 2) + 1):
        lab = spherical_kmeans(L, c, seed)
        if len(np.unique(lab)) < 2:
            continue
        s = silhouette(L, lab)
        if s > best_s + 1e-9:
            best, best_s = lab, s
    return best


def build_profiles(liked: np.ndarray, disliked: np.ndarray | None = None, clusters: int | None = None,
                   dislike_weight: float = 0.5, normalise: bool = True, seed: int = 0) -> np.ndarray:
    """Profiles (p, d) from liked (n, d) and disliked (m, d) vectors; (0, d) when nothing is left
    (no liked items, or dislikes that cancel the likes). `normalise`: work on unit vectors (sets
    searched by inner product); otherwise raw means, for sets searched by L2 distance."""
    liked = np.asarray(liked, dtype=np.float32).reshape(-1, np.shape(liked)[-1])
    d = liked.shape[1]
    if not len(liked):
        return np.zeros((0, d), np.float32)
    L = unit(liked)
    labels = cluster_liked(L, clusters, seed)
    base = L if normalise else liked
    neg = None
    if disliked is not None and len(disliked):
        Dv = unit(disliked) if normalise else np.asarray(disliked, np.float32).reshape(-1, d)
        neg = dislike_weight * Dv.mean(axis=0)
    out = []
    for g in np.unique(labels):
        p = base[labels == g].mean(axis=0)
        if neg is not None:
            p = p - neg
        if np.linalg.norm(p) < MIN_NORM * max(1.0, float(np.linalg.norm(base[labels == g].mean(axis=0)))):
            continue
        out.append(unit(p)[0] if normalise else p)
    return np.stack(out).astype(np.float32) if out else np.zeros((0, d), np.float32)


def mmr(relevance: np.ndarray, V: np.ndarray, k: int, diversity: float) -> np.ndarray:
    """Maximal marginal relevance (Carbonell & Goldstein 1998): pick k of the candidates, each time
    the one maximising (1 - diversity) * relevance - diversity * (max cosine to those picked).
    `relevance` (n,) and unit vectors V (n, d); returns candidate indices in pick order.
    diversity 0 is ranking by relevance alone."""
    n = len(relevance)
    k = min(k, n)
    rel = np.asarray(relevance, dtype=np.float64)
    if diversity <= 0 or k <= 1:
        return np.argsort(-rel, kind="stable")[:k]
    V = np.ascontiguousarray(V, dtype=np.float32)
    picked = [int(np.argmax(rel))]
    nearest = (V @ V[picked[0]]).astype(np.float64)  # similarities one picked row at a time: k small products, no n x n matrix
    free = np.ones(n, bool)
    free[picked[0]] = False
    for _ in range(k - 1):
        gain = (1 - diversity) * rel - diversity * nearest
        gain[~free] = -np.inf
        j = int(np.argmax(gain))
        picked.append(j)
        free[j] = False
        nearest = np.maximum(nearest, V @ V[j])
    return np.array(picked, dtype=np.int64)
