"""`embed recommend --evaluate`: does the content recommender find what users went on to like?

Protocol: per user, the last liked interaction by timestamp is held out (leave-last-out); without
a timestamp column one liked interaction per user is held out at random (seeded). Users with fewer
than two liked, known interactions are not scored (their interactions still train). Every method
ranks the catalogue (the --where rows) for each scored user with that user's training items left
out, and is scored on the same users:
  - content: the recommender (profiles from the training items' vectors, the store's index);
  - popular: the items most liked in training;
  - item-kNN: items co-liked with the user's training items (cosine-normalised co-occurrence
    counts from the training interactions), topped up with popular items when it has fewer than k.
Metrics: hit-rate@k (95% Wilson interval), nDCG@k (one relevant item: 1/log2(rank+1); 95% Bayesian
bootstrap interval of the mean), catalogue coverage (share of catalogue items recommended to
anyone; no interval: it counts distinct items over all users rather than averaging over users, and
a bootstrap over users, which can only lose items, is biased for it). The cold-start view scores the users whose held-out item had no
training interaction at all: only content embeddings can find those. Content is compared with
each baseline by McNemar's exact test on the same users' hits; a winner is named only at p < 0.05."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import SearchError
from ..search.query import nothing_to_search, set_notes
from .batch import group
from .engine import Ask, Recommender
from .query import check_options

METHODS = ("content", "popular", "item-knn")


@dataclass
class EvalReport:
    store: str
    vector_set: str
    interactions: str
    k: int
    where: str | None
    protocol: dict
    methods: dict  # method -> {"all": metrics, "cold_start": metrics}
    comparisons: list  # content vs each baseline, overall and cold start
    seconds: float
    notes: list = field(default_factory=list)
    plan: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def holdout(g, times: np.ndarray | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(test users, their held-out interaction index) and a training mask over interactions."""
    rng = np.random.default_rng(seed)
    train = g.pos >= 0
    users, held = [], []
    for u in range(len(g.names)):
        m = g.user(u)
        cand = m[(g.pos[m] >= 0) & g.like[m]]
        if len(np.unique(g.pos[cand])) < 2:
            continue
        if times is not None:
            h = cand[np.lexsort((cand, times[cand]))[-1]]  # latest; ties: the later row of the file
        else:
            h = cand[rng.integers(len(cand))]
        # the held-out item leaves training for this user entirely (a repeat of it would leak the answer)
        train[m[g.pos[m] == g.pos[h]]] = False
        users.append(u)
        held.append(h)
    return np.array(users, dtype=np.int64), np.array(held, dtype=np.int64), train


def metrics(ranks: np.ndarray, lists: np.ndarray, catalogue: int, k: int, seed: int = 0) -> dict:
    """Hit-rate@k, nDCG@k and coverage with 95% intervals from each user's rank of the held-out
    item (0: not in the top k) and their recommended rows (users x k, -1 padding)."""
    from ..evaluation.intervals import confusion_bootstrap, wilson

    n = len(ranks)
    if n == 0:
        return {"users": 0}
    hits = int((ranks > 0).sum())
    # the gain of a user is one of k + 1 values (0, or 1/log2(rank + 1) for rank 1..k): a Bayesian
    # bootstrap of the mean gain is the helper's Dirichlet over those values' frequencies (every
    # possible value a cell, so a small all-miss run is not declared certain), at O(n_boot x k) cost
    vals = np.concatenate([[0.0], 1.0 / np.log2(np.arange(1, k + 1) + 1.0)])
    counts = np.bincount(np.clip(ranks, 0, k), minlength=k + 1).astype(float)
    ndcg = float(counts @ vals / n)
    ndcg_ci = confusion_bootstrap(counts, lambda d: (d @ vals) / d.sum(-1), seed=seed)
    # coverage counts distinct items over all users; a resample of users can only lose items, so a
    # bootstrap over users is biased low, and reflecting it (the basic interval) gave intervals that
    # lay wholly above the estimate. It is reported as the count it is, without an interval.
    covered = len(np.unique(lists[lists >= 0]))
    return {"users": n, "hits": hits, "hit_rate": hits / n, "hit_rate_ci": list(wilson(hits, n)),
            "ndcg": ndcg, "ndcg_ci": list(ndcg_ci), "coverage": covered / catalogue, "items_recommended": covered}


def rank_of(lists: np.ndarray, target: np.ndarray) -> np.ndarray:
    hit = lists == target[:, None]
    return np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, 0)


def _popular_lists(order: np.ndarray, seen: list, k: int) -> np.ndarray:
    out = np.full((len(seen), k), -1, np.int64)
    for i, s in enumerate(seen):
        top = order[: k + len(s)]
        top = top[~np.isin(top, s)][:k]
        out[i, : len(top)] = top
    return out


def _item_knn_lists(train_pos: np.ndarray, train_user: np.ndarray, users: np.ndarray, seen: list, k: int,
                    allowed: np.ndarray | None, pop_order: np.ndarray, batch: int = 512) -> np.ndarray:
    """Top k by summed cosine co-occurrence with each user's training items; topped up by popularity."""
    import scipy.sparse as sp

    items, col = np.unique(train_pos, return_inverse=True)
    uidx, row = np.unique(train_user, return_inverse=True)
    X = sp.csr_matrix((np.ones(len(col), np.float32), (row, col)), shape=(len(uidx), len(items)))  # repeats summed
    X.data[:] = 1.0  # ... and counted once
    C = (X.T @ X).tocsr()
    C.setdiag(0)
    C.eliminate_zeros()
    norm = 1.0 / np.sqrt(np.maximum(np.asarray(X.sum(axis=0)).ravel(), 1.0))
    C = sp.diags(norm) @ C @ sp.diags(norm)
    ok_item = np.ones(len(items), bool) if allowed is None else allowed[items]
    where_u = {int(u): i for i, u in enumerate(uidx)}
    out = np.full((len(users), k), -1, np.int64)
    for s in range(0, len(users), batch):
        part = users[s : s + batch]
        rows_in_X = np.array([where_u.get(int(u), -1) for u in part])
        have = rows_in_X >= 0
        S = (X[rows_in_X[have]] @ C).tocsr() if have.any() else None
        j = 0
        for i, u in enumerate(part):
            seen_i = seen[s + i]
            rec = np.zeros(0, np.int64)
            if have[i]:
                r = S.getrow(j)
                j += 1
                cols, sc = r.indices, r.data
                good = ok_item[cols] & (sc > 0)
                cols, sc = cols[good], sc[good]
                cand = items[cols]
                keep = ~np.isin(cand, seen_i)
                cand, sc = cand[keep], sc[keep]
                rec = cand[np.lexsort((cand, -sc))][:k]
            if len(rec) < k:
                fill = pop_order[: k + len(seen_i) + len(rec)]
                fill = fill[~np.isin(fill, seen_i) & ~np.isin(fill, rec)]
                rec = np.concatenate([rec, fill])[:k]
            out[s + i, : len(rec)] = rec
    return out


def evaluate_recommenders(store: str | Path, interactions: str | Path, k: int = 10, where: str | None = None,
                          diversity: float = 0.0, clusters: int | None = None, dislike_weight: float = 0.5,
                          min_rating: float | None = None, exact: bool = False, vector_set: str | None = None,
                          seed: int = 0, batch: int = 256, progress: bool = True, keep: int = 0) -> tuple[EvalReport, list]:
    """Score the content recommender and the two baselines on held-out interactions (see the module
    docstring). Returns the report and up to `keep` scored users' examples (liked, held out, content's list)."""
    from ..evaluation.paired import ALPHA, mcnemar
    from ..progress import progress_bar
    from ..search.query import SearchContext
    from ..search.where import parse_where
    from ..sources.interactions import read_interactions

    check_options(k, diversity, clusters, dislike_weight)
    parse_where(where)
    inter = read_interactions(interactions)
    ctx = SearchContext(store, vector_set, None, "cpu")
    ctx.RELOAD_S = float("inf")
    snap = ctx._snap
    rows, allowed = snap.rows, snap.mask(where)
    catalogue = snap.search.count(allowed)
    if catalogue == 0:
        raise nothing_to_search(snap.vs, snap.rows, where)
    t0 = time.perf_counter()
    g = group(inter, ctx.row_of, min_rating)
    users, held, train = holdout(g, inter.timestamps, seed)
    notes = []
    if g.unknown_items:
        notes.append(f"{g.unknown_items} item id(s) not in {snap.vs.name} (e.g. {g.unknown_example!r}) were ignored")
    target = g.pos[held]
    if allowed is not None and len(target):
        inside = allowed[target]
        if not inside.all():
            notes.append(f"{int((~inside).sum())} user(s) whose held-out item is outside --where {where} were not scored")
        users, held, target = users[inside], held[inside], target[inside]
    # what each user has seen: their training rows and every row of the same content (SetRows.same_content),
    # for all three methods alike; a held-out item among them is no test of any method
    seen = [rows.same_content(np.unique(g.pos[m][train[m]])) for m in (g.user(u) for u in users)]
    fresh = np.array([t not in set(s.tolist()) for t, s in zip(target, seen)], dtype=bool)
    if not fresh.all():
        notes.append(f"{int((~fresh).sum())} user(s) whose held-out item has the content of one of their training items "
                     "(a byte copy under another id) were not scored: no method recommends what a user has seen")
        users, held, target = users[fresh], held[fresh], target[fresh]
        seen = [s for s, f in zip(seen, fresh) if f]
    if len(users) < 1:
        raise SearchError(f"no user of {interactions} has two or more liked items in {snap.vs.name}: nothing to hold out and score")
    user_of = np.empty(len(inter), np.int64)
    for u in range(len(g.names)):
        user_of[g.user(u)] = u
    tr_like = train & g.like
    train_counts = np.bincount(g.pos[train], minlength=len(rows))
    like_counts = np.bincount(g.pos[tr_like], minlength=len(rows))
    cand = np.flatnonzero(like_counts > 0 if allowed is None else (like_counts > 0) & allowed)
    pop_order = cand[np.lexsort((cand, -like_counts[cand]))]
    lists = {}
    # content, batched through the recommender
    rec = Recommender(snap.search, clusters, dislike_weight, seed)
    L = np.full((len(users), k), -1, np.int64)
    with progress_bar(len(users), "evaluate", "user", progress) as bar:
        for s in range(0, len(users), batch):
            part = range(s, min(len(users), s + batch))
            need = np.unique(np.concatenate([g.pos[g.user(users[i])][train[g.user(users[i])]] for i in part]))
            V = dict(zip(need.tolist(), rows.fetch(need)))
            asks = []
            for i in part:
                m = g.user(users[i])
                lk, dk = m[train[m] & g.like[m]], m[train[m] & ~g.like[m]]
                asks.append(Ask(np.stack([V[int(p)] for p in g.pos[lk]]),
                                np.stack([V[int(p)] for p in g.pos[dk]]) if len(dk) else None, seen[i]))
            for i, a in zip(part, rec.recommend(asks, k, allowed, diversity, exact)):
                L[i, : len(a.rows)] = a.rows
            bar.update(len(part))
    lists["content"] = L
    lists["popular"] = _popular_lists(pop_order, seen, k)
    lists["item-knn"] = _item_knn_lists(g.pos[tr_like], user_of[tr_like], users, seen, k, allowed, pop_order)
    cold = train_counts[target] == 0
    methods, ranks = {}, {}
    for name in METHODS:
        ranks[name] = rank_of(lists[name], target)
        methods[name] = {"all": metrics(ranks[name], lists[name], catalogue, k, seed),
                         "cold_start": metrics(ranks[name][cold], lists[name][cold], catalogue, k, seed)}
    comparisons = []
    for base in METHODS[1:]:
        for view, sel in (("all", slice(None)), ("cold_start", cold)):
            a, b = ranks["content"][sel] > 0, ranks[base][sel] > 0
            if not len(a):
                continue
            t = mcnemar(a, b)
            winner = ("content" if t["accuracy_a"] > t["accuracy_b"] else base) if t["p_value"] < ALPHA else None
            comparisons.append({"a": "content", "b": base, "view": view, "users": t["n"], "hit_rate_a": t["accuracy_a"],
                                "hit_rate_b": t["accuracy_b"], "only_a_hit": t["only_a_right"], "only_b_hit": t["only_b_right"],
                                "p_value": t["p_value"], "winner": winner})
    protocol = {"split": "leave-last-out by timestamp" if inter.timestamps is not None else f"random holdout, one liked item per user (seed {seed})",
                "users_in_file": int(len(g.names)), "users_scored": int(len(users)), "cold_start_users": int(cold.sum()),
                "catalogue": int(catalogue), "train_interactions": int(train.sum()), "likes": "rating >= " + str(min_rating) if min_rating is not None else "every interaction",
                "interval": "95%: Wilson (hit-rate), Bayesian bootstrap over users (nDCG), none for coverage (a count of distinct items over all users)"}
    examples = []
    for i in range(min(keep, len(users))):
        m = g.user(users[i])
        liked = g.pos[m][train[m] & g.like[m]]
        examples.append({"user": str(g.names[users[i]]), "liked": [str(rows.ids[p]) for p in liked],
                         "liked_uris": [str(rows.uris[p]) for p in liked], "held_out": str(rows.ids[target[i]]),
                         "held_out_uri": str(rows.uris[target[i]]), "cold": bool(cold[i]),
                         "hits": [{"rank": r + 1, "id": str(rows.ids[j]), "uri": str(rows.uris[j]), "label": str(rows.labels[j]),
                                   "score": float("nan"), "held_out": bool(j == target[i])} for r, j in enumerate(L[i]) if j >= 0]})
    notes[:0] = set_notes(snap.vs)
    return EvalReport(str(store), snap.vs.name, str(interactions), k, where, protocol, methods, comparisons,
                      time.perf_counter() - t0, notes, dict(rec.plan)), examples


def fmt_metric(m: dict, key: str) -> str:
    if not m.get("users"):
        return "-"
    if key + "_ci" not in m:
        return f"{m[key]:.3f} ({m['items_recommended']} items)" if key == "coverage" else f"{m[key]:.3f}"
    lo, hi = m[key + "_ci"]
    return f"{m[key]:.3f} ({lo:.3f}-{hi:.3f})"
