"""Filtered search, as ratios measured in one run on one synthetic store.

A store of N clustered unit vectors (float16, d=512 by default) with a label column whose rare value
covers 1% of the rows (independent of the clusters), indexed as `embed build` indexes it (exact up
to 100,000 rows, then IVF-Flat tuned to recall@10 >= 0.95). Then, through `SearchContext` (what
`embed search` and `embed serve` call), one query at a time:
  - unfiltered: QPS and recall@10 against brute force;
  - filtered (--where label=rare): QPS (first query, which selects and loads the rows, timed apart)
    and recall@10 against brute force on the selected rows.
Export throughput and memory are measured by `bench_export.py`.

    .venv/bin/python benchmarks/bench_search_filtered.py --n 200000
    .venv/bin/python benchmarks/bench_search_filtered.py --n 1000000 --queries 300
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def make_store(path: Path, n: int, dim: int, rare: float, seed: int = 0, part: int = 100_000):
    from embedstore.store import ItemRows, open_store

    centers = np.random.default_rng(12345).normal(size=(1000, dim)).astype(np.float32)
    rng = np.random.default_rng(seed)
    attrs = {"encoder": "synthetic", "dim": dim, "dtype": "float16", "normalize": "l2", "modality": "image"}
    X_all = np.empty((n, dim), np.float16)
    labels = np.where(rng.random(n) < rare, "rare", "common")
    with open_store(path, mode="a", create=True) as st:
        for s in range(0, n, part):
            e = min(n, s + part)
            X = centers[rng.integers(0, 1000, e - s)] + 0.8 * rng.normal(size=(e - s, dim)).astype(np.float32)
            X /= np.linalg.norm(X, axis=1, keepdims=True)
            X_all[s:e] = X
            items = ItemRows()
            ids = [f"r{i:08d}" for i in range(s, e)]
            for i, lab in zip(ids, labels[s:e]):
                items.append(id=i, uri="", sha256=i, status="ok", label=lab)
            st.commit("synthetic-0000", attrs, items, ids, ids, X_all[s:e], {})
        t0 = time.perf_counter()
        st.refresh(index=True)
        build_s = time.perf_counter() - t0
    return X_all.astype(np.float32), labels, build_s


def recall(found: list[list[str]], truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(f"r{i:08d}" for i in t)) / 10 for f, t in zip(found, truth)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--rare", type=float, default=0.01)
    args = ap.parse_args()

    import faiss
    from faiss.contrib.exhaustive_search import knn_ground_truth

    from embedstore.search.query import SearchContext

    work = Path(tempfile.mkdtemp(prefix="bench-filtered-"))
    print(f"machine: {os.cpu_count()} cores, faiss {faiss.__version__}; n={args.n} dim={args.dim} rare share={args.rare}")
    t0 = time.perf_counter()
    X, labels, build_s = make_store(work / "s.h5", args.n, args.dim, args.rare)
    print(f"store written in {time.perf_counter() - t0:.0f} s (index {build_s:.0f} s)")
    ctx = SearchContext(work / "s.h5")
    print(f"index: {ctx.meta.get('type')} params {ctx.meta.get('params')} stored recall@10 {ctx.meta.get('recall_at_10')}")
    centers = np.random.default_rng(12345).normal(size=(1000, args.dim)).astype(np.float32)
    rng = np.random.default_rng(7)
    Q = centers[rng.integers(0, 1000, args.queries)] + 0.8 * rng.normal(size=(args.queries, args.dim)).astype(np.float32)
    Q /= np.linalg.norm(Q, axis=1, keepdims=True)

    def chunks(mask=None):
        for s in range(0, len(X), 65536):
            sel = np.arange(s, min(len(X), s + 65536))
            if mask is not None:
                sel = sel[mask[sel]]
            yield X[sel]

    _, truth_all = knn_ground_truth(Q, chunks(), 10, metric_type=faiss.METRIC_INNER_PRODUCT)
    rare_rows = np.flatnonzero(labels == "rare")
    _, t_sub = knn_ground_truth(Q, iter([X[rare_rows]]), 10, metric_type=faiss.METRIC_INNER_PRODUCT)
    truth_rare = rare_rows[t_sub]

    res = {}
    for name, where, truth in (("unfiltered", None, truth_all), ("filtered", "label=rare", truth_rare)):
        t = time.perf_counter()
        h0, _, _ = ctx.run(Q[0], 10, where)
        first_ms = 1000 * (time.perf_counter() - t)
        found, plan = [], {}
        t = time.perf_counter()
        for q in Q:
            hits, plan, _ = ctx.run_batch(q, 10, where)
            found.append([h["id"] for h in hits[0]])
        qps = len(Q) / (time.perf_counter() - t)
        res[name] = {"qps": qps, "recall": recall(found, truth), "first_ms": first_ms, "method": plan.get("method")}
        print(f"{name:>10}: {qps:7.0f} q/s  recall@10 {res[name]['recall']:.4f}  first query {first_ms:.0f} ms  [{plan.get('method')}]")
    print(f"filtered/unfiltered QPS ratio: {res['filtered']['qps'] / res['unfiltered']['qps']:.2f}  (target >= 0.5; "
          f"filtered recall@10 target >= 0.99)")


if __name__ == "__main__":
    main()
