"""The recommender over one vector set's index: profiles -> one batched search through
`SearchIndex` (filters, exactness and plan as `embed search`) -> seen items (and their byte
copies under other ids) dropped -> MMR.
Takes vectors, row positions and masks; never paths."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .profile import build_profiles, mmr, unit

MIN_CANDIDATES = 50  # MMR chooses among at least this many of the most relevant items (or 5k)


@dataclass
class Ask:
    """One user's question: liked and disliked vectors, and row positions never to return."""

    liked: np.ndarray
    disliked: np.ndarray | None = None
    exclude: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


@dataclass
class Answer:
    rows: np.ndarray  # row positions, best first
    scores: np.ndarray  # the index's scores for them (cosine on normalised sets; -squared L2 otherwise)
    profiles: int  # how many taste profiles the liked items gave (0: empty profile, nothing returned)


class Recommender:
    """Recommendations from a `SearchIndex` (`index.rows` reads vectors by position).

    clusters: None (or 0) chooses per user (one mean profile unless the liked items split clearly);
    1 forces one mean; n forces n clusters. dislike_weight: how much of the disliked mean is
    subtracted. diversity: MMR's trade-off (0: relevance only, 1: novelty only)."""

    def __init__(self, index, clusters: int | None = None, dislike_weight: float = 0.5, seed: int = 0):
        self.index, self.clusters, self.dislike_weight, self.seed = index, clusters, dislike_weight, seed
        self.plan: dict = {}

    def fetch_unit(self, positions: np.ndarray) -> np.ndarray:
        """Unit vectors of rows (read once each, in the order asked)."""
        positions = np.asarray(positions, dtype=np.int64)
        if not len(positions):
            return np.zeros((0, self.index.rows_dim()), np.float32)
        u, inv = np.unique(positions, return_inverse=True)
        return unit(self.index.rows.fetch(u))[inv]

    def recommend(self, asks: list[Ask], k: int, allowed: np.ndarray | None = None, diversity: float = 0.0,
                  exact: bool = False) -> list[Answer]:
        """The k best rows for each ask among `allowed` rows (None: all), without its excluded rows."""
        inner = self.index.inner
        profiles = [build_profiles(a.liked, a.disliked, self.clusters, self.dislike_weight, inner, self.seed) for a in asks]
        owner = np.concatenate([np.full(len(p), i) for i, p in enumerate(profiles)]) if asks else np.zeros(0, int)
        out = [Answer(np.zeros(0, np.int64), np.zeros(0, np.float32), len(p)) for p in profiles]
        if not len(owner):
            return out
        pool = self.index.count(allowed)
        n_cand = k if diversity <= 0 else max(5 * k, MIN_CANDIDATES)
        excl = [np.unique(a.exclude[(a.exclude >= 0)]) for a in asks]
        copies = getattr(self.index.rows, "same_content", None)  # a store's rows: byte copies of a seen item are seen too
        if copies is not None:
            excl = [copies(e) if len(e) else e for e in excl]
        if allowed is not None:
            excl = [e[allowed[e]] for e in excl]
        depth = min(pool, n_cand + max(len(e) for e in excl))
        if depth <= 0:
            return out
        res = self.index.search(np.concatenate(profiles), depth, allowed, exact=exact)
        self.plan = dict(res.plan)
        P_all = np.concatenate(profiles)
        for i in range(len(asks)):
            q = np.flatnonzero(owner == i)
            if not len(q):
                continue
            R, D = res.R[q].ravel(), res.D[q].ravel()
            s = D if inner else -D
            keep = (R >= 0) & ~np.isin(R, excl[i])
            R, s = R[keep], s[keep]
            order = np.argsort(-s, kind="stable")
            R, s = R[order], s[order]
            R, first = np.unique(R, return_index=True)  # one entry per row, its best score over the profiles
            s = s[first]
            order = np.argsort(-s, kind="stable")[:n_cand]
            R, s = R[order], s[order]
            if diversity > 0 and len(R) > 1:
                V = self.fetch_unit(R)
                rel = (V @ unit(P_all[q]).T).max(axis=1)
                pick = mmr(rel, V, k, diversity)
            else:
                pick = np.arange(min(k, len(R)))
            out[i] = Answer(R[pick], s[pick].astype(np.float32), len(q))
        return out
