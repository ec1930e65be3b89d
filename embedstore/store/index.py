"""The FAISS index of a vector set: a sidecar file, extended when rows are appended and
rebuilt when rows change. Its type, size and measured recall live in a JSON beside it."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..atomic import atomic_path, file_sha256, write_json_atomic
from ..errors import StoreError


def ids_digest(ids) -> str:
    """sha256 of the ids in order, each followed by a newline (a list, object array or Arrow array of str)."""
    from .columns import objects

    h = hashlib.sha256()
    for a in range(0, len(ids), 1 << 16):
        part = objects(ids, a, a + (1 << 16))
        if len(part):
            h.update(("\n".join(part) + "\n").encode())
    return h.hexdigest()


def index_paths(sidecar: Path, set_name: str) -> tuple[Path, Path]:
    d = sidecar / "index"
    return d / f"{set_name}.faiss", d / f"{set_name}.json"


def read_index_meta(sidecar: Path, set_name: str) -> dict | None:
    _, meta_path = index_paths(sidecar, set_name)
    try:
        return json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None


EXACT_MAX_ROWS = 100_000  # above this a set gets an IVF index tuned to RECALL_TARGET (EMBEDSTORE_EXACT_MAX overrides)
PQ_MIN_ROWS = 2_000_000  # above this the IVF lists hold PQ codes, not full vectors (EMBEDSTORE_PQ_MIN overrides)
RECALL_TARGET = 0.95
TUNE_QUERIES = 500
RERANK = 10  # IVF-PQ: fetch k * RERANK candidates by PQ score, re-rank them by the stored vectors


def exact_max_rows() -> int:
    from ..settings import env_number

    return env_number("EMBEDSTORE_EXACT_MAX", EXACT_MAX_ROWS, int)


def pq_min_rows() -> int:
    from ..settings import env_number

    return env_number("EMBEDSTORE_PQ_MIN", PQ_MIN_ROWS, int)


def index_kind(n: int) -> str:
    """Flat (exact) for small sets, IVF-Flat up to `pq_min_rows()`, then IVF-PQ: at tens of millions
    of rows full vectors no longer fit in memory, PQ codes of dim/4 bytes do."""
    if n <= exact_max_rows():
        return "flat"
    return "ivfpq" if n > max(pq_min_rows(), 1024) else "ivfflat"  # PQ trains 256 centroids per sub-vector


def pq_subquantizers(dim: int) -> int:
    """PQ sub-vectors of 4 dimensions each (one byte per sub-vector): dim/4 bytes a vector."""
    m = max(1, dim // 4)
    while dim % m:
        m -= 1
    return m


def _faiss_metric(metric: str):
    import faiss

    return faiss.METRIC_INNER_PRODUCT if metric == "inner_product" else faiss.METRIC_L2


def _new_index(dim: int, metric: str, n: int, read_rows, seed: int = 0, fp16: bool = False):
    """Exact (flat) up to `exact_max_rows()`, else IVF (Flat, or PQ above `pq_min_rows()`) with
    about sqrt(n) lists, trained on a sample streamed from the rows. `fp16` (the set stores float16
    vectors): the IVF lists hold the vectors as float16 (`SQfp16`, not relative to their list's
    centroid), half the memory and file of float32 and the very values the store holds: the same
    hits as IVF-Flat, scores equal up to float32 rounding (FAISS sums in another order when the
    dimension is not a multiple of its SIMD width)."""
    import faiss

    kind = index_kind(n)
    if kind == "flat":
        return faiss.IndexFlatIP(dim) if metric == "inner_product" else faiss.IndexFlatL2(dim)
    nlist = int(min(16384, max(16, np.sqrt(n))))
    want = min(n, max(50 * nlist, 256 * 40 if kind == "ivfpq" else 0))
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(n, want, replace=False))
    sample, pos = [], 0
    for chunk in read_rows(0, n):
        m = pick[(pick >= pos) & (pick < pos + len(chunk))] - pos
        sample.append(chunk[m])
        pos += len(chunk)
    codes = f"PQ{pq_subquantizers(dim)}" if kind == "ivfpq" else ("SQfp16" if fp16 else "Flat")
    index = faiss.index_factory(dim, f"IVF{nlist},{codes}", _faiss_metric(metric))
    if codes == "SQfp16":
        faiss.extract_index_ivf(index).by_residual = False  # the vector itself, not its offset from the centroid
    if kind == "ivfpq":
        # The factory's IVF-PQ trains polysemous codes (simulated annealing over each sub-quantizer's
        # 256 centroids), used only by Hamming-filtered search (polysemous_ht), which this index never
        # runs: measured 4.4 s per sub-quantizer on 2 AMD EPYC cores whatever the rows, so 34 of a
        # 38 s training at dim 32 and about 9 minutes at dim 512 (128 sub-quantizers). The codes it
        # trains are a permutation of the same centroids, so distances, hits and recall are unchanged.
        faiss.downcast_index(faiss.extract_index_ivf(index)).do_polysemous_training = False
    index.train(np.ascontiguousarray(np.concatenate(sample), dtype=np.float32))
    return index


def _list_codes(index) -> str | None:
    """What an IVF index's lists hold: "Flat" (float32 vectors), "SQfp16" (float16 vectors), "PQ"; None if not IVF."""
    import faiss

    try:
        ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    except RuntimeError:  # not an IVF index
        return None
    if isinstance(ivf, faiss.IndexIVFPQ):
        return "PQ"
    if isinstance(ivf, faiss.IndexIVFScalarQuantizer):
        return "SQfp16" if ivf.sq.qtype == faiss.ScalarQuantizer.QT_fp16 and not ivf.by_residual else "SQ"
    return "Flat" if isinstance(ivf, faiss.IndexIVFFlat) else None


def _fill_lists_exactly(index, n: int, read_rows) -> None:
    """Add rows 0..n-1 to an empty IVF-Flat (or IVF-SQfp16 without residuals) index, as `index.add`
    would (the same list for each row, rows in order within a list, the same codes: the float32 or
    float16 bytes), with every inverted list allocated once at its final size.
    Why not `index.add` chunk by chunk: each list then grows by doubling and holds up to twice
    its rows while the index is built (at 1M x 64-d, ~260 MB over the index's own 256 MB). Two
    passes over the rows: assign each to its list (8 bytes a row kept), then copy it in place."""
    import faiss

    ivf = faiss.extract_index_ivf(index)
    code = {4 * ivf.d: np.float32, 2 * ivf.d: np.float16}[ivf.code_size]
    lists = faiss.downcast_InvertedLists(ivf.invlists)
    labels, pos = np.empty(n, dtype=np.int64), 0
    for chunk in read_rows(0, n):
        _, assigned = ivf.quantizer.search(np.ascontiguousarray(chunk, dtype=np.float32), 1)
        labels[pos : pos + len(chunk)] = assigned[:, 0]
        pos += len(chunk)
    if (labels < 0).any():  # FAISS's add would leave these rows out of every list, and the index short
        raise StoreError(f"{int((labels < 0).sum())} row(s) of this vector set, e.g. row {int(np.flatnonzero(labels < 0)[0])}, "
                         "have vectors too large for a FAISS index (distances overflow); rebuild or re-import the set "
                         "normalised (--normalize l2)")
    counts = np.bincount(labels, minlength=ivf.nlist)
    for lst in np.flatnonzero(counts):
        lists.resize(int(lst), int(counts[lst]))
    cursor, pos = np.zeros(ivf.nlist, dtype=np.int64), 0
    for chunk in read_rows(0, n):
        lab = labels[pos : pos + len(chunk)]
        order = np.argsort(lab, kind="stable")
        xs = np.ascontiguousarray(chunk[order], dtype=code)
        ids = (order + pos).astype(np.int64)
        present, first = np.unique(lab[order], return_index=True)
        for lst, a, b in zip(present.tolist(), first.tolist(), [*first[1:].tolist(), len(order)]):
            lists.update_entries(lst, int(cursor[lst]), b - a, faiss.swig_ptr(ids[a:b]), faiss.swig_ptr(xs[a:b].view(np.uint8)))
            cursor[lst] += b - a
        pos += len(chunk)
    if pos != n or not np.array_equal(cursor, counts):
        raise RuntimeError(f"index rows read {pos}, expected {n}")
    index.ntotal = n
    ivf.ntotal = n


def _tune(index, metric: str, n: int, read_rows, seed: int = 0) -> dict:
    """Smallest nprobe whose recall@10 against exact search reaches RECALL_TARGET on two kinds of
    held-out queries: stored vectors searched with themselves left out of both result lists, and
    midpoints of random pairs of stored vectors (queries that fall between clusters, as text
    queries against image vectors do). The recall kept is the lower of the two."""
    import faiss
    from faiss.contrib.exhaustive_search import knn_ground_truth

    rng = np.random.default_rng(seed + 1)
    m = min(TUNE_QUERIES, n)
    picks = rng.choice(n, 3 * m, replace=True)
    q_rows, pair_a, pair_b = picks[:m], picks[m : 2 * m], picks[2 * m :]
    wanted = np.unique(picks)
    got, pos = {}, 0
    for chunk in read_rows(0, n):
        for r in wanted[(wanted >= pos) & (wanted < pos + len(chunk))]:
            got[int(r)] = chunk[r - pos].copy()  # not a view: it would keep the whole chunk (every chunk) alive
        pos += len(chunk)
    Q1 = np.stack([got[int(r)] for r in q_rows]).astype(np.float32)
    Q2 = np.stack([got[int(a)] + got[int(b)] for a, b in zip(pair_a, pair_b)]).astype(np.float32) / 2
    if metric == "inner_product":
        Q2 /= np.maximum(np.linalg.norm(Q2, axis=1, keepdims=True), 1e-12)
    Q = np.ascontiguousarray(np.concatenate([Q1, Q2]))
    _, gt = knn_ground_truth(Q, (np.ascontiguousarray(c, dtype=np.float32) for c in read_rows(0, n)), 11,
                             metric_type=_faiss_metric(metric))
    self_ids = np.concatenate([q_rows, np.full(m, -2)])  # midpoints have no self to leave out

    def top10(I: np.ndarray) -> list[set]:
        return [set([j for j in row if j != q and j >= 0][:10]) for row, q in zip(I, self_ids)]

    truth = top10(gt)
    ivf = faiss.extract_index_ivf(index)
    pq = isinstance(faiss.downcast_index(ivf), faiss.IndexIVFPQ)
    # IVF-PQ searches return k * RERANK candidates that are re-ranked by the stored vectors, so
    # recall@10 after re-ranking is the share of the true 10 among the candidates
    depth = 10 * RERANK if pq else 10
    # PQ codes can cap recall below what more lists fix: stop once doubling nprobe gains < 0.5 points
    plateau = 0.005 if pq else -1.0
    nprobe, last = 1, None
    while True:
        ivf.nprobe = nprobe
        _, I = index.search(Q, depth + 1)
        found = [set([j for j in row if j != q and j >= 0][:depth]) for row, q in zip(I, self_ids)]
        r = np.array([len(a & b) / max(1, len(b)) for a, b in zip(found, truth)])
        recall = float(min(r[:m].mean(), r[m:].mean()))
        if last is not None and recall - last[1] < plateau:
            nprobe, recall = last
            break
        if recall >= RECALL_TARGET or nprobe >= ivf.nlist:
            break
        last = (nprobe, recall)
        nprobe = min(ivf.nlist, nprobe * 2)
    ivf.nprobe = nprobe
    return {"nprobe": nprobe, "nlist": int(ivf.nlist), "recall_at_10": recall, "queries": len(Q)}


def update_index(
    sidecar: Path,
    set_name: str,
    ids: list[str],
    dim: int,
    metric: str,
    read_rows: Callable[[int, int], Iterator[np.ndarray]],
    add_rows: Callable | None = None,
    fp16: bool = False,
) -> dict:
    """Bring the index in line with `ids` (the set's live rows, in order); return its metadata.
    `fp16`: the set stores float16 vectors, which a new IVF-Flat index keeps as float16 too.

    Appended rows are added to the existing index; any other change rebuilds it. Sets above
    `exact_max_rows()` get an IVF index whose nprobe is tuned to recall@10 >= 0.95 (re-measured
    after every change). `read_rows(start, stop)` yields float32 chunks of those rows;
    `add_rows(index, start, stop)`, when given, adds rows to an IVF index in parallel (Ray).
    """
    import faiss

    index_path, meta_path = index_paths(sidecar, set_name)
    meta = read_index_meta(sidecar, set_name)
    n = len(ids)
    start = 0
    index = None
    kind = index_kind(n)
    want_exact = kind == "flat"
    from .integrity import index_problem

    damaged = index_problem(index_path, meta) if meta and index_path.exists() else None
    if meta and not damaged and before_unit_rows(meta, fp16):
        damaged = BEFORE_UNIT_ROWS
    if (meta and not damaged and index_path.is_file() and meta.get("metric") == metric and meta.get("ntotal", -1) <= n
            and meta.get("kind", "flat" if meta.get("exact") else "ivfflat") == kind):
        if meta["ntotal"] == n and meta.get("ids_sha256") == ids_digest(ids):
            return meta
        if meta.get("ids_sha256") == ids_digest(ids[: meta["ntotal"]]):
            index = faiss.read_index(str(index_path))
            start = index.ntotal
    if index is None:
        index = _new_index(dim, metric, n, read_rows, fp16=fp16)
    if add_rows is not None and not want_exact and n > start:
        index = add_rows(index, start, n)
    elif start == 0 and kind == "ivfflat" and _list_codes(index) in ("Flat", "SQfp16"):
        _fill_lists_exactly(index, n, read_rows)
    else:
        for chunk in read_rows(start, n):
            index.add(np.ascontiguousarray(chunk, dtype=np.float32))
    if index.ntotal != n:
        raise RuntimeError(f"index of {set_name} has {index.ntotal} rows after update; expected {n}")
    if want_exact:
        params, recall, note = {}, 1.0, "exact search"
    else:
        tuned = _tune(index, metric, n, read_rows)
        params = {"nlist": tuned["nlist"], "nprobe": tuned["nprobe"]}
        recall = tuned["recall_at_10"]
        note = (f"lower of two measurements against exact search: {tuned['queries'] // 2} stored vectors (self left out) "
                f"and {tuned['queries'] // 2} midpoints of stored pairs")
        if kind == "ivfpq":
            params.update(pq_m=int(faiss.downcast_index(faiss.extract_index_ivf(index)).pq.M), pq_bits=8, rerank=RERANK)
            note += f"; after re-ranking the top {RERANK} x k PQ candidates by their stored vectors"
            if recall < RECALL_TARGET:
                note += " (PQ codes cap recall: more lists stopped helping)"
    index_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(index_path) as tmp:
        faiss.write_index(index, str(tmp))
    meta = {
        "file": f"index/{index_path.name}",
        "type": {"Flat": "IVFFlat", "SQfp16": "IVFSQfp16", "PQ": "IVFPQ"}.get(
            _list_codes(index), "IndexFlatIP" if metric == "inner_product" else "IndexFlatL2"),
        "kind": kind,
        "metric": metric,
        "exact": want_exact,
        "params": params,
        "ntotal": n,
        "recall_at_10": recall,
        "recall_note": note,
        "ids_sha256": ids_digest(ids),
        "unit_rows": metric == "inner_product",  # added as rows.unit_rows reads them
        "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "added_rows": n - start,
        # checksum of the file as written: load_index and `embed verify` refuse bytes that differ
        "sha256": file_sha256(index_path), "size": index_path.stat().st_size, "mtime_ns": index_path.stat().st_mtime_ns,
    }
    if damaged:
        meta["rebuilt_because"] = damaged
    write_json_atomic(meta_path, meta, indent=1)
    return meta


def load_index(sidecar: Path, set_name: str, ids: list[str] | None = None):
    """The set's FAISS index with its tuned search parameters applied, and its metadata.

    With `ids`, refuses an index whose rows no longer match the set (ids drift)."""
    import faiss

    from ..errors import StoreError

    index_path, _ = index_paths(sidecar, set_name)
    meta = read_index_meta(sidecar, set_name)
    if not meta or not index_path.is_file():
        raise StoreError(f"vector set {set_name} has no FAISS index under {sidecar}; re-run `embed build` on the store to build it")
    if ids is not None and meta.get("ids_sha256") != ids_digest(ids):
        raise StoreError(f"the FAISS index of {set_name} does not match the set's rows; re-run `embed build` on the store to rebuild it")
    from .integrity import index_problem

    problem = index_problem(index_path, meta)
    if problem is None:
        try:
            index = faiss.read_index(str(index_path))
        except RuntimeError as e:
            problem = f"unreadable ({str(e).splitlines()[0][:120]})"
    if problem is not None:
        raise StoreError(f"the FAISS index {index_path} is {problem}; run `embed verify {sidecar.name[:-2]} --repair` "
                         "or `embed build` on the store to rebuild it")
    if "nprobe" in meta.get("params", {}):
        faiss.extract_index_ivf(index).nprobe = int(meta["params"]["nprobe"])
    return index, meta


BEFORE_UNIT_ROWS = ("stale: built from float16 rows as stored (lengths 1 +- ~2e-4), before they were read back as unit "
                    "vectors; its scores differ from an exact scan's in the 4th decimal")


def before_unit_rows(meta: dict | None, fp16: bool) -> bool:
    """Whether an inner-product index of a float16 set was filled before rows were read back as unit
    vectors (store/rows.unit_rows): readers do not use it, writers rebuild it. A float32 set's rows
    were unit to ~1e-7 already: its index stands."""
    return bool(meta) and fp16 and meta.get("metric") == "inner_product" and not meta.get("unit_rows")


def load_index_for_rows(sidecar: Path, set_name: str, ids, fp16: bool = False) -> tuple[object | None, dict, str]:
    """For searches: (index or None, metadata, state), never refusing because a build is running.

    "before_unit_rows": see `before_unit_rows` (searches scan exactly).
    "ok": the index holds `ids[:meta['ntotal']]` (rows a build appended since are not in it yet;
    search scans them exactly); "ahead": it holds more rows than `ids` (a writer wrote the index and
    has not yet renamed the new catalog into place: read the catalog again); "stale", "missing" or
    "damaged" (its bytes differ from the sha256 recorded when it was written): no usable index
    (search scans exactly)."""
    import faiss

    index_path, _ = index_paths(sidecar, set_name)
    damaged = damaged_meta = None
    for _attempt in range(5):
        meta = read_index_meta(sidecar, set_name)
        if not meta or not index_path.is_file():
            return None, meta or {}, "missing"
        n = int(meta.get("ntotal", -1))
        if n > len(ids):
            return None, meta, "ahead"
        if before_unit_rows(meta, fp16):
            return None, meta, "before_unit_rows"
        if n < 0 or meta.get("ids_sha256") != ids_digest(list(ids[:n])):
            return None, meta, "stale"
        from .integrity import index_problem

        damaged = index_problem(index_path, meta)  # bytes that differ from the recorded sha256 are never searched
        if damaged:
            if meta == damaged_meta:
                break  # the same damage twice: not a replacement in progress
            damaged_meta = meta
            continue  # (or the .faiss and .json were being replaced: read both again)
        try:
            index = faiss.read_index(str(index_path))
        except RuntimeError:
            continue  # replaced while read
        if index.ntotal != n:
            continue  # the .faiss and .json were replaced between the two reads: read both again
        if "nprobe" in meta.get("params", {}):
            faiss.extract_index_ivf(index).nprobe = int(meta["params"]["nprobe"])
        return index, meta, "ok"
    return None, meta, "damaged" if damaged else "stale"
