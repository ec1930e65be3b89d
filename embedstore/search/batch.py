"""Batch search: many queries (a folder of images, a text file, a table of ids) or every item
(the k-NN graph) -> one row per (query, rank, id, score, label), streamed to CSV or Parquet."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import SearchError
from .index import normalise
from .query import SearchContext, check_k, nothing_to_search, set_notes
from .where import parse_where, row_mask

COLUMNS = ["query", "rank", "id", "score", "label"]


@dataclass
class BatchReport:
    store: str
    vector_set: str
    kind: str  # image | text | id | vector | neighbors
    queries: int
    k: int
    where: str | None
    out: str
    rows_written: int
    include_self: bool
    seconds: float
    plan: dict = field(default_factory=dict)
    skipped: list = field(default_factory=list)  # {query, reason}
    notes: list = field(default_factory=list)  # e.g. which vector set of several was used

    def to_dict(self) -> dict:
        d = asdict(self)
        d["queries_per_s"] = self.queries / self.seconds if self.seconds else None
        return d


def _context(store, vector_set, weights, device, where, out) -> SearchContext:
    from ..reports.table import check_table_path

    check_table_path(out)
    parse_where(where)
    ctx = SearchContext(store, vector_set, weights, device)
    ctx.RELOAD_S = float("inf")  # one snapshot for the whole batch
    return ctx


def _rows(names, hits_per_query) -> dict:
    cols = {c: [] for c in COLUMNS}
    for name, hits in zip(names, hits_per_query):
        for h in hits:
            cols["query"].append(str(name))
            cols["rank"].append(h["rank"])
            cols["id"].append(h["id"])
            cols["score"].append(h["score"])
            cols["label"].append(h["label"])
    return cols


def search_batch(store: str | Path, queries: str | Path, out: str | Path, k: int = 10, where: str | None = None,
                 exact: bool = False, include_self: bool = False, vector_set: str | None = None, weights: str | None = None,
                 device: str = "auto", batch: int = 256, progress: bool = True, image_batch: int = 16) -> BatchReport:
    """Search every query in `queries` (images folder, .txt of texts, .csv/.parquet with an id column,
    .npy of vectors: each row's query is named by its row number)."""
    from ..progress import progress_bar
    from ..reports.table import TableWriter
    from ..sources.queries import read_queries

    check_k(k)
    ctx = _context(store, vector_set, weights, device, where, out)
    kind, items, skipped = read_queries(queries)
    if kind == "id":
        items = [(ctx.stored_id(name) or name, q) for name, q in items]  # also as `embed ls` prints them
        missing = [name for name, _ in items if ctx.row_of(name) is None]
        if missing:
            raise SearchError(f"{len(missing)} id(s) in {queries} are not in {ctx.vs.name}, e.g. {missing[0]!r}; "
                              "ids are as `embed ls` shows them")
    elif kind == "text":
        ctx.vector_for_text(items[0][1])  # a store without a text tower fails before the loop
    elif kind == "vector":
        V = ctx.vectors_from_file(Path(queries))
    t0 = time.perf_counter()
    plan, n_done = {}, 0
    with TableWriter(out, COLUMNS) as w, progress_bar(len(items), "search", "query", progress) as bar:
        for s in range(0, len(items), batch):
            part = items[s : s + batch]
            names, vecs = [], []
            if kind in ("text", "vector"):
                vecs = [ctx.service().embed_texts([p for _, p in part]) if kind == "text" else V[s : s + batch]]
                names = [n for n, _ in part]
            elif kind == "id":
                names = [n for n, _ in part]
                vecs = [ctx.vector_for_id(n) for n in names]
            else:  # image files: decoded one by one, encoded in batches of `image_batch`
                for b in range(0, len(part), image_batch):
                    got, V_img, bad = ctx.vectors_for_image_files(part[b : b + image_batch])
                    names += got
                    vecs.append(V_img)
                    skipped += bad
            if names:
                Q = np.concatenate(vecs)
                excl = names if kind == "id" and not include_self else None
                hits, plan, _ = ctx.run_batch(Q, k, where, exact, excl)
                w.write(_rows(names, hits))
                n_done += len(names)
            bar.update(len(part))
    if not n_done:
        raise SearchError(f"none of the {len(items)} queries in {queries} could be used, e.g. {skipped[0]['reason']}")
    return BatchReport(str(store), ctx.vs.name, kind, n_done, k, where, str(out), w.rows, include_self,
                       time.perf_counter() - t0, plan, skipped, set_notes(ctx.vs))


def knn_blocks(search, rows, k: int, allowed: np.ndarray | None = None, exact: bool = False, chunk_rows: int = 1024):
    """The k-NN graph a chunk of rows at a time: yields (row positions, scores (n, k), neighbour rows
    (n, k; -1 for none), plan) for each chunk of the `allowed` rows, an item never its own neighbour.
    Memory: one chunk of vectors plus the index. `embed neighbors` and `embed audit` walk it."""
    for pos, X in rows.chunks(allowed, chunk_rows=chunk_rows):
        res = search.search(normalise(X) if search.inner else X, k, allowed, pos, exact=exact)
        yield pos, res.D, res.R, res.plan


def neighbors(store: str | Path, out: str | Path, k: int = 10, where: str | None = None, exact: bool = False,
              vector_set: str | None = None, batch: int = 1024, progress: bool = True) -> BatchReport:
    """Every item's k nearest other items (the k-NN graph), streamed: memory stays at one batch of
    queries plus the index. `where` restricts both the items and their neighbours."""
    from ..progress import progress_bar
    from ..reports.table import TableWriter

    check_k(k)
    ctx = _context(store, vector_set, None, "cpu", where, out)
    snap = ctx._snap
    rows = snap.rows
    allowed = row_mask(rows, where)
    pool = len(rows) if allowed is None else int(allowed.sum())
    if pool == 0:
        raise nothing_to_search(snap.vs, rows, where)
    check_k(k, pool - 1, "other item(s) each item has", where)
    t0 = time.perf_counter()
    plan = {}
    with TableWriter(out, COLUMNS) as w, progress_bar(pool, "neighbors", "item", progress) as bar:
        for pos, Ds, Rs, plan in knn_blocks(snap.search, rows, k, allowed, exact, batch):
            hits = [[{"rank": r + 1, "id": str(rows.ids[j]), "score": float(d), "label": str(rows.labels[j])}
                     for r, (d, j) in enumerate(zip(D, R)) if j >= 0] for D, R in zip(Ds, Rs)]
            w.write(_rows(rows.ids[pos], hits))
            bar.update(len(pos))
    return BatchReport(str(store), snap.vs.name, "neighbors", pool, k, where, str(out), w.rows, False,
                       time.perf_counter() - t0, plan, notes=set_notes(snap.vs))
