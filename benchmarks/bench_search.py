"""Query throughput and recall@10 of embedstore's search against calling FAISS directly.

For each size: synthetic clustered vectors (d=512, L2-normalised) go through the store's index
builder (exact below 100,000 rows, else IVF tuned to recall@10 >= 0.95), then the same queries
run (a) through embedstore's search path (`SearchIndex` over the index loaded by the store with its
tuned parameters, rows mapped back to ids) and (b) straight into `index.search` on the same index object. Recall@10
of both is measured against exact search. Above EMBEDSTORE_PQ_MIN rows the index is IVF-PQ and
"ours" re-ranks k x 10 candidates by their vectors (from memory here; `embed search` reads them from
the store), while "faiss" returns the PQ ranking as it is.

    .venv/bin/python benchmarks/bench_search.py                    # 100k
    .venv/bin/python benchmarks/bench_search.py --sizes 100000,1000000
    EMBEDSTORE_PQ_MIN=500000 .venv/bin/python benchmarks/bench_search.py --sizes 1000000   # IVF-PQ at 1M
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def make_vectors(n: int, dim: int, seed: int = 0, clusters: int = 1000) -> np.ndarray:
    """`clusters` fixed centres (the same for every seed) plus noise drawn from `seed`."""
    centers = np.random.default_rng(12345).normal(size=(clusters, dim)).astype(np.float32)
    rng = np.random.default_rng(seed)
    X = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, 100_000):
        e = min(n, s + 100_000)
        X[s:e] = centers[rng.integers(0, clusters, e - s)] + 0.8 * rng.normal(size=(e - s, dim)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X.astype(np.float16).astype(np.float32)  # float16 like the store


def recall_at_10(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=1, help="queries per call (1 = one query at a time, like the CLI)")
    args = ap.parse_args()

    import faiss
    from faiss.contrib.exhaustive_search import knn_ground_truth

    from embedstore.search.index import SearchIndex, ArrayRows
    from embedstore.store.index import load_index, update_index

    print(f"machine: {os.cpu_count()} cores, faiss {faiss.__version__}, omp threads {faiss.omp_get_max_threads()}")
    print(f"{'n':>9} {'index':>10} {'params':>22} {'build s':>8} {'ours q/s':>9} {'faiss q/s':>9} {'ratio':>6} "
          f"{'ours R@10':>9} {'faiss R@10':>10} {'stored R@10':>11}")
    for n in (int(x) for x in args.sizes.split(",")):
        X = make_vectors(n, args.dim)
        Q = make_vectors(args.queries, args.dim, seed=2)  # fresh queries: same clusters, new noise
        ids = [f"item{i}" for i in range(n)]
        work = Path(tempfile.mkdtemp(prefix="bench-search-"))

        def read_rows(a, b):
            for s in range(a, b, 65536):
                yield X[s : min(b, s + 65536)]

        t0 = time.perf_counter()
        meta = update_index(work, "bench", ids, args.dim, "inner_product", read_rows, fp16=True)  # float16 like the store
        build_s = time.perf_counter() - t0
        index, meta = load_index(work, "bench", ids)
        _, truth = knn_ground_truth(Q, read_rows(0, n), 10, metric_type=faiss.METRIC_INNER_PRODUCT)
        id_arr = np.asarray(ids)

        # the index object `embed search` and `embed serve` search through (IVF-PQ: re-ranks k x 10
        # candidates by their vectors, here from memory, in `embed search` from the store)
        searcher = SearchIndex(index, meta, ArrayRows(X), "inner_product")

        def ours():
            out = []
            for s in range(0, len(Q), args.batch):
                R = searcher.search(Q[s : s + args.batch], 10).R
                out.append(R)
                _ = id_arr[R]  # rows -> ids, as the search command does
            return np.concatenate(out)

        def raw():
            out = []
            for s in range(0, len(Q), args.batch):
                _, I = index.search(Q[s : s + args.batch], 10)
                out.append(I)
            return np.concatenate(out)

        ours(), raw()  # warm-up
        best = {}
        for name, fn in (("ours", ours), ("raw", raw), ("ours2", ours), ("raw2", raw)):
            t0 = time.perf_counter()
            found = fn()
            best.setdefault(name.rstrip("2"), []).append((time.perf_counter() - t0, found))
        t_ours = min(t for t, _ in best["ours"])
        t_raw = min(t for t, _ in best["raw"])
        r_ours, r_raw = recall_at_10(best["ours"][0][1], truth), recall_at_10(best["raw"][0][1], truth)
        params = ",".join(f"{k}={v}" for k, v in meta["params"].items()) or "-"
        print(f"{n:9d} {meta['type']:>10} {params:>22} {build_s:8.1f} {len(Q) / t_ours:9.0f} {len(Q) / t_raw:9.0f} "
              f"{t_raw / t_ours:6.2f} {r_ours:9.3f} {r_raw:10.3f} {meta['recall_at_10']:11.3f}")


if __name__ == "__main__":
    main()
