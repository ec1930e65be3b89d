"""`recommend`: items liked (and disliked) -> the k items of a store to recommend, through the
store's index (filters and plan as `embed search`). The one implementation behind the CLI, the
Python API and the server; `like_store` / `like_set` take the liked items from another store or
vector set made by the same encoder (cross-domain)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import OptionError, ProvenanceMismatchError, SearchError
from ..search.query import check_k, nothing_to_search, set_notes
from .engine import Ask, Recommender

# what must agree for vectors of two sets to be compared (the stored dtype may differ)
COMPARABLE = ("encoder", "weights_sha256", "preprocess", "layer", "pooling", "normalize", "dim", "modality")


@dataclass
class RecommendReport:
    store: str
    vector_set: str
    liked: list
    disliked: list
    k: int
    where: str | None
    diversity: float
    profiles: int
    hits: list = field(default_factory=list)  # {rank, id, uri, label, split, score}
    dropped: list = field(default_factory=list)  # ids given as both liked and disliked (ignored)
    liked_from: str | None = None  # cross-domain: the store / set the liked items come from
    plan: dict = field(default_factory=dict)
    ms: float = 0.0
    liked_uris: list = field(default_factory=list)  # files of the liked items (reports; the server never sends them)
    notes: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def check_options(k: int, diversity: float, clusters: int | None, dislike_weight: float) -> None:
    if k < 1:
        raise OptionError(f"-k must be at least 1, not {k}")
    if not 0.0 <= diversity <= 1.0:
        raise OptionError(f"--diversity must be between 0 (relevance only) and 1, not {diversity}")
    if clusters is not None and clusters < 0:
        raise OptionError(f"--clusters must be 0 (chosen per user) or more (1: one mean profile), not {clusters}")
    if not 0.0 <= dislike_weight <= 1.0:
        raise OptionError(f"--dislike-weight must be between 0 and 1, not {dislike_weight}")


class Ids(list):
    """Ids already split and unescaped by `split_ids`: splitting them again gives them back."""


def split_ids(ids) -> list[str]:
    """'a,b' or ['a', 'b,c'] -> ['a', 'b', 'c'] (order kept, repeats dropped). A comma that is part
    of an id is written '\\,' (as in --where). Each is then looked up as stored, else as `embed ls`
    prints ids (SearchContext.stored_id)."""
    import re

    if ids is None:
        return Ids()
    if isinstance(ids, Ids):  # the server splits to check the ids, then hands them on
        return ids
    parts = [ids] if isinstance(ids, str) else list(ids)
    out = Ids()
    for p in parts:
        for x in re.split(r"(?<!\\),", str(p)):
            x = x.strip().replace("\\,", ",")
            if x and x not in out:
                out.append(x)
    return out


def check_comparable(source, target) -> None:
    """Refuse to compare vectors of two sets (SearchContexts) made by different encoders."""
    from ..store import open_store
    from ..store.provenance import describe_diffs, provenance_diffs

    a, b = source.prov, target.prov
    want = {k: a[k] for k in COMPARABLE if k in a}
    diffs = provenance_diffs(b, want)
    if diffs:
        got, wanted = describe_diffs(b, want, diffs)
        with open_store(target.store) as st:  # a set of the target store made like the liked vectors?
            same = st.find_set(a)
        fix = (f"pick that set of {Path(target.store).name} with --set {same.name}" if same is not None
               else "embed both with the same encoder")
        raise ProvenanceMismatchError(
            f"cannot recommend from {Path(source.store).name}:{source.vs.name} into {Path(target.store).name}:{target.vs.name}: "
            f"their vectors were made differently ({wanted} vs {got}); {fix}")


def resolve(ctx, ids: list[str], what: str) -> np.ndarray:
    """Row positions of ids in ctx's set; unknown ids are one error naming them."""
    rows = [ctx.row_of(i) for i in ids]
    missing = [i for i, r in zip(ids, rows) if r is None]
    if missing:  # the first one's reason, as `embed search --id` gives it (quarantined, in another set, close matches)
        more = f" ({len(missing) - 1} more {what} id(s) not in {ctx.vs.name}: {', '.join(missing[1:5])}{' ...' if len(missing) > 5 else ''})"
        raise SearchError(f"{what} id: {ctx.missing_id_error(missing[0])}" + (more if len(missing) > 1 else "")
                          + "; a comma inside an id is written \\,")
    return np.array(rows, dtype=np.int64)


def hit_dicts(rows, positions: np.ndarray, scores: np.ndarray) -> list[dict]:
    from ..search.query import row_hit

    return [row_hit(rows, j, r + 1, s) for r, (j, s) in enumerate(zip(positions, scores))]


def recommend_in(ctx, like, dislike=None, k: int = 10, where: str | None = None, diversity: float = 0.0,
                 clusters: int | None = None, dislike_weight: float = 0.5, exact: bool = False, source=None,
                 seed: int = 0) -> RecommendReport:
    """Recommend from an open SearchContext `ctx` (the server keeps one); `source`: another open
    SearchContext the liked and disliked ids belong to (cross-domain), provenance-checked."""
    check_options(k, diversity, clusters, dislike_weight)
    like, dislike = split_ids(like), split_ids(dislike)
    if not like:
        raise SearchError("give at least one liked item: --like ID[,ID...]")
    ctx.refresh()  # the newest committed state first: the rows resolved below index into it
    src = source or ctx
    if source is not None:
        source.refresh()
        check_comparable(source, ctx)
    like, dislike = ([*dict.fromkeys(src.stored_id(i) or i for i in ids)] for ids in (like, dislike))
    both = [i for i in like if i in dislike]
    liked_rows = resolve(src, like, "liked")
    disliked_rows = resolve(src, dislike, "disliked")
    keep_l = np.array([i not in both for i in like])
    keep_d = np.array([i not in both for i in dislike], dtype=bool)
    if not keep_l.any():
        raise SearchError(f"empty profile: every liked item is also disliked ({', '.join(both[:5])}); "
                          "an item cannot be both; like at least one item you do not dislike")
    snap = ctx._snap
    allowed = snap.mask(where)
    pool = snap.search.count(allowed)
    if pool == 0:
        raise nothing_to_search(snap.vs, snap.rows, where)
    # the inputs never come back: in the same set by row, across sets by id
    if source is None:
        exclude = np.concatenate([liked_rows, disliked_rows])
    else:
        exclude = np.array([r for r in (ctx.row_of(i) for i in like + dislike) if r is not None], dtype=np.int64)
    # and whatever has their content under another id, in this set (or, from another store, by its bytes)
    exclude = np.union1d(exclude, snap.rows.same_content(exclude) if source is None else
                         snap.rows.same_content(np.concatenate([liked_rows, disliked_rows]), of=src.rows))
    room = pool - (int(allowed[exclude].sum()) if allowed is not None else len(np.unique(exclude)))
    check_k(k, room, "item(s) there are to recommend", where, " once the liked and disliked items are left out")
    L = src.rows.fetch(liked_rows[keep_l])
    D = src.rows.fetch(disliked_rows[keep_d]) if keep_d.any() else None
    rec = Recommender(snap.search, clusters, dislike_weight, seed)
    t0 = time.perf_counter()
    ans = rec.recommend([Ask(L, D, exclude)], k, allowed, diversity, exact)[0]
    ms = 1000 * (time.perf_counter() - t0)
    if ans.profiles == 0:
        raise SearchError("empty profile: the disliked items cancel the liked ones (the profile vector is zero); "
                          "like more items or lower --dislike-weight")
    plan = dict(rec.plan)
    plan["exact"] = bool(exact or snap.search.index is None or "exact" in plan.get("method", ""))
    return RecommendReport(ctx.store, snap.vs.name, like, dislike, k, where, diversity, ans.profiles,
                           hit_dicts(snap.rows, ans.rows, ans.scores), both,
                           None if source is None else f"{Path(source.store).name}:{source.vs.name}", plan, ms,
                           [str(src.rows.uris[r]) for r in liked_rows], set_notes(snap.vs))


def open_contexts(store, vector_set=None, like_store=None, like_set=None):
    """(target, source or None) SearchContexts; the source is another store and/or set."""
    from ..search.query import SearchContext

    ctx = SearchContext(store, vector_set, None, "cpu")
    source = None
    if like_store is not None or like_set is not None:
        source = SearchContext(like_store or store, like_set, None, "cpu")
        check_comparable(source, ctx)
    return ctx, source


def recommend(store: str | Path, like, dislike=None, k: int = 10, where: str | None = None, diversity: float = 0.0,
              clusters: int | None = None, dislike_weight: float = 0.5, exact: bool = False, vector_set: str | None = None,
              like_store: str | Path | None = None, like_set: str | None = None, seed: int = 0) -> RecommendReport:
    """The k items of `store` to recommend to someone who liked `like` (ids, or 'a,b') and disliked
    `dislike`; the inputs never come back. `like_store` / `like_set`: the ids belong to that store
    or set (same encoder), recommendations come from `store`."""
    from ..search.where import parse_where

    check_options(k, diversity, clusters, dislike_weight)
    parse_where(where)
    ctx, source = open_contexts(store, vector_set, like_store, like_set)
    return recommend_in(ctx, like, dislike, k, where, diversity, clusters, dislike_weight, exact, source, seed)
