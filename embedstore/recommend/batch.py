"""Per-user recommendations from an interactions file, streamed: users are taken a batch at a
time, their profiles searched together, their rows written and dropped. Memory, once the file is
read: the interactions as integer arrays (about 17 bytes a row) and the user names, the id -> row
map the search already holds, and one batch of users; results are never accumulated."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import SearchError
from ..search.query import nothing_to_search, set_notes
from .engine import Ask, Recommender
from .query import check_options, open_contexts

COLUMNS = ["user", "rank", "id", "score", "label", "source"]


@dataclass
class Grouped:
    """Interactions as arrays grouped by user: rows of user u are order[start[u]:start[u + 1]]."""

    names: np.ndarray  # user names, sorted
    order: np.ndarray  # interaction indices grouped by user (stable: file order within a user)
    start: np.ndarray  # (users + 1,) offsets into order
    pos: np.ndarray  # per interaction: the item's row in the liked-from set (-1: unknown or empty)
    like: np.ndarray  # per interaction: True liked, False disliked
    unknown_items: int  # distinct item ids not in the set
    unknown_example: str

    def user(self, u: int) -> np.ndarray:
        return self.order[self.start[u] : self.start[u + 1]]


def group(inter, row_of, min_rating: float | None = None) -> Grouped:
    """Group interactions by user and map items to rows; ratings below `min_rating` are dislikes."""
    names, codes = np.unique(inter.users, return_inverse=True)
    order = np.argsort(codes, kind="stable")
    start = np.searchsorted(codes[order], np.arange(len(names) + 1))
    uniq, inv = np.unique(inter.items, return_inverse=True)
    upos = np.array([-1 if u == "" else _or_minus(row_of(str(u))) for u in uniq], dtype=np.int64)
    unknown = [u for u, p in zip(uniq, upos) if p < 0 and u != ""]
    like = np.ones(len(inter), bool)
    if min_rating is not None:
        if inter.ratings is None:
            from ..errors import OptionError

            raise OptionError(f"--min-rating needs a rating column in {inter.path}")
        like = ~(inter.ratings < min_rating)  # NaN (no rating): a like
    return Grouped(names, order, start, upos[inv], like, len(unknown), str(unknown[0]) if unknown else "")


def _map_rows(pos: np.ndarray, src, ctx) -> np.ndarray:
    """Rows of `src`'s set -> rows of `ctx`'s set holding the same id (-1: none)."""
    uniq, inv = np.unique(pos, return_inverse=True)
    mapped = np.array([-1 if p < 0 else _or_minus(ctx.row_of(str(src.rows.ids[p]))) for p in uniq], dtype=np.int64)
    return mapped[inv]


def _or_minus(r) -> int:
    return -1 if r is None else int(r)


def popular_rows(pos: np.ndarray, n_rows: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(rows, counts) of interacted items, most interacted first (ties: lower row first), within `allowed`."""
    counts = np.bincount(pos[pos >= 0], minlength=n_rows)
    rows = np.flatnonzero(counts > 0 if allowed is None else (counts > 0) & allowed)
    order = np.lexsort((rows, -counts[rows]))
    return rows[order], counts[rows[order]]


@dataclass
class UsersReport:
    store: str
    vector_set: str
    interactions: str
    out: str
    users: int
    k: int
    where: str | None
    diversity: float
    rows_written: int
    from_profile: int  # users recommended from their own liked items
    from_popular: int  # users with no usable interactions: the most interacted items instead
    short: int  # users given fewer than k (too few items left after their seen ones)
    unknown_items: int
    seconds: float
    liked_from: str | None = None
    plan: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["users_per_s"] = self.users / self.seconds if self.seconds else None
        return d


def recommend_users(store: str | Path, interactions: str | Path, out: str | Path, k: int = 10, where: str | None = None,
                    diversity: float = 0.0, clusters: int | None = None, dislike_weight: float = 0.5,
                    min_rating: float | None = None, exact: bool = False, vector_set: str | None = None,
                    like_store: str | Path | None = None, like_set: str | None = None, batch: int = 256,
                    progress: bool = True, keep: int = 0, seed: int = 0) -> tuple[UsersReport, list]:
    """Top-k per user of `interactions` (user,item[,rating,timestamp]) to `out` (.csv or .parquet):
    one row per (user, rank, id, score, label, source). Every item a user interacted with is left
    out of their list. Users with no usable interactions get the most liked items (source
    'popular'), fewer than k when fewer items were liked at all (counted as short). Returns the
    report and the first `keep` users' (user, liked ids, hits) for reports."""
    from ..progress import progress_bar
    from ..reports.table import TableWriter, check_table_path
    from ..search.where import parse_where
    from ..sources.interactions import read_interactions
    from .query import hit_dicts

    check_options(k, diversity, clusters, dislike_weight)
    check_table_path(out)
    parse_where(where)
    inter = read_interactions(interactions)
    ctx, source = open_contexts(store, vector_set, like_store, like_set)
    src = source or ctx
    ctx.RELOAD_S = float("inf")
    snap = ctx._snap
    rows, allowed = snap.rows, snap.mask(where)
    if snap.search.count(allowed) == 0:
        raise nothing_to_search(snap.vs, snap.rows, where)
    g = group(inter, lambda i: src.row_of(src.stored_id(i) or i), min_rating)
    n_items = len(np.unique(inter.items[inter.items != ""]))
    inter = None  # from here on the interactions are integer arrays (g); the strings are dropped
    if g.unknown_items and g.unknown_items == n_items:
        raise SearchError(f"none of the items in {interactions} are in {src.vs.name} (e.g. {g.unknown_example!r}); "
                          "ids are as `embed ls` shows them")
    # rows of the target set each interaction maps to (same set: the same; across stores: by id)
    tpos = g.pos if source is None else _map_rows(g.pos, src, ctx)
    liked_pos = np.where(g.like, tpos, -1)  # popularity counts likes, not dislikes
    pop, _ = popular_rows(liked_pos, len(rows), allowed)
    counts = np.bincount(liked_pos[liked_pos >= 0], minlength=len(rows))
    rec = Recommender(snap.search, clusters, dislike_weight, seed)
    n_users = len(g.names)
    t0 = time.perf_counter()
    kept, stats = [], {"profile": 0, "popular": 0, "short": 0}
    notes = []
    if g.unknown_items:
        notes.append(f"{g.unknown_items} item id(s) of {interactions} are not in {src.vs.name} (e.g. {g.unknown_example!r}); "
                     "their interactions were ignored")
    with TableWriter(out, COLUMNS) as w, progress_bar(n_users, "recommend", "user", progress) as bar:
        for s in range(0, n_users, batch):
            users = range(s, min(n_users, s + batch))
            asks, idx = [], []
            need = np.unique(np.concatenate([g.pos[g.user(u)] for u in users]))
            need = need[need >= 0]
            V = dict(zip(need.tolist(), src.rows.fetch(need))) if len(need) else {}
            for u in users:
                m = g.user(u)
                p, lk = g.pos[m], g.like[m]
                good = p >= 0
                if not (good & lk).any():
                    continue
                liked = np.stack([V[int(x)] for x in p[good & lk]])
                dis = p[good & ~lk]
                disliked = np.stack([V[int(x)] for x in dis]) if len(dis) else None
                seen = tpos[m]
                asks.append(Ask(liked, disliked, seen[seen >= 0]))
                idx.append(u)
            answers = dict(zip(idx, rec.recommend(asks, k, allowed, diversity, exact))) if asks else {}
            cols = {c: [] for c in COLUMNS}
            for u in users:
                a = answers.get(u)
                if a is not None and a.profiles:
                    R, S, how = a.rows, a.scores, "profile"
                else:
                    seen = tpos[g.user(u)]
                    R = pop[~np.isin(pop, seen)][:k]
                    S, how = counts[R].astype(np.float32), "popular"  # score: how many liked it
                stats[how] += 1
                stats["short"] += len(R) < k
                for r, (j, sc) in enumerate(zip(R, S)):
                    cols["user"].append(str(g.names[u]))
                    cols["rank"].append(r + 1)
                    cols["id"].append(str(rows.ids[j]))
                    cols["score"].append(float(sc))
                    cols["label"].append(str(rows.labels[j]))
                    cols["source"].append(how)
                if len(kept) < keep:
                    liked_ids = [str(src.rows.ids[x]) for x in g.pos[g.user(u)][(g.pos[g.user(u)] >= 0) & g.like[g.user(u)]]]
                    kept.append({"user": str(g.names[u]), "liked": liked_ids, "liked_uris": [str(src.rows.uris[src.row_of(i)]) for i in liked_ids],
                                 "source": how, "hits": hit_dicts(rows, R, S)})
            if cols["user"]:
                w.write(cols)
            bar.update(len(users))
    if stats["popular"]:
        notes.append(f"{stats['popular']} user(s) had no usable interactions (none, or only unknown or disliked items): "
                     "they got the most liked items (source 'popular')")
    notes[:0] = set_notes(snap.vs)
    rep = UsersReport(str(store), snap.vs.name, str(interactions), str(out), n_users, k, where, diversity, w.rows,
                      stats["profile"], stats["popular"], stats["short"], g.unknown_items, time.perf_counter() - t0,
                      None if source is None else f"{Path(source.store).name}:{source.vs.name}", dict(rec.plan), notes)
    return rep, kept
