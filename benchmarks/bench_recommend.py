"""Recommendation benchmarks: quality against the baselines on a seeded interaction set built from
the bundled digits, and throughput + peak RSS at scale.

quality: scikit-learn's 1,797 handwritten digits are written as PNGs (`embedstore.datasets.write_digits`)
and embedded into a store (`--encoder`, default EfficientNet-Lite0 with its bundled ImageNet
weights). A synthetic but reproducible interaction set is made from them (seed `--seed`):
  - every item is a digit image; its taste cluster is its digit class;
  - 20% of the items, chosen at random, are "new arrivals" (cold): no training interaction ever
    touches them; they can only be a user's last interaction;
  - within each class the other items get a Zipf popularity (weight 1/rank^0.8 over a random order),
    so a most-popular baseline has something real to find;
  - each of `--users` users has 1-3 favourite classes (Dirichlet weights) and 5-15 interactions at
    increasing timestamps: each picks a class from the user's tastes (10% of the time any class:
    noise), then an unseen warm item of that class by popularity;
  - the last interaction is a cold item of one of the user's classes half the time, else one
    more warm item.
`embed recommend --evaluate`'s protocol (leave-last-out by timestamp) then scores content,
most-popular and item-kNN; the cold-start view is the users whose held-out item is a new arrival.

scale: N synthetic clustered unit vectors (1,000 clusters, d=512, float16-rounded as the store
holds them) indexed by the store's own index builder (IVF-Flat with about sqrt(N) lists, nprobe
tuned to recall@10 >= 0.95) and wrapped in `SearchIndex` over the vectors in memory (no HDF5);
U users with 1-3 taste clusters and 20 interactions each are recommended k=10 items in batches of
256 through `Recommender` (the code behind every door), seen items left out. Reports users/s,
recommended items/s and peak RSS (the vectors alone are N x d x 4 bytes; the IVF-Flat index holds
a second copy).

store: the whole `embed recommend --interactions` path (CSV in, Parquet out, vectors read from the
HDF5 store, exact flat index) on an N-item synthetic store, in a child process for its peak RSS.

    .venv/bin/python benchmarks/bench_recommend.py quality
    .venv/bin/python benchmarks/bench_recommend.py scale --items 1000000 --users 10000 --diversity 0,0.3
    .venv/bin/python benchmarks/bench_recommend.py store --items 100000 --users 10000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def digit_interactions(labels: np.ndarray, ids: list[str], n_users: int, seed: int, cold_share: float = 0.2) -> list[tuple]:
    """(user, item, timestamp) rows as the module docstring describes."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    cold = np.zeros(n, bool)
    cold[rng.choice(n, int(cold_share * n), replace=False)] = True
    classes = np.unique(labels)
    warm_of, pop_of, cold_of = {}, {}, {}
    for c in classes:
        w = rng.permutation(np.flatnonzero((labels == c) & ~cold))
        warm_of[c] = w
        p = 1.0 / np.arange(1, len(w) + 1) ** 0.8
        pop_of[c] = p / p.sum()
        cold_of[c] = np.flatnonzero((labels == c) & cold)
    rows = []
    for u in range(n_users):
        tastes = rng.choice(classes, rng.integers(1, 4), replace=False)
        weights = rng.dirichlet(np.ones(len(tastes)))
        seen: set = set()
        t = 0
        for _ in range(rng.integers(5, 16) - 1):
            c = rng.choice(classes) if rng.random() < 0.1 else rng.choice(tastes, p=weights)
            p = pop_of[c] * np.array([j not in seen for j in warm_of[c]])
            j = int(rng.choice(warm_of[c], p=p / p.sum()))
            seen.add(j)
            rows.append((f"user{u:05d}", ids[j], t))
            t += 1
        c = rng.choice(tastes, p=weights)
        if rng.random() < 0.5 and len(cold_of[c]):
            j = int(rng.choice(cold_of[c]))
        else:
            p = pop_of[c] * np.array([j not in seen for j in warm_of[c]])
            j = int(rng.choice(warm_of[c], p=p / p.sum()))
        rows.append((f"user{u:05d}", ids[j], t))
    return rows


def quality(args) -> dict:
    import csv

    from embedstore.datasets import write_digits
    from embedstore.ingest import build
    from embedstore.recommend import evaluate_recommenders
    from embedstore.store import open_store

    work = Path(args.work or tempfile.mkdtemp(prefix="bench-rec-"))
    store = work / f"digits-{args.encoder.replace(':', '_').replace('/', '_')}.h5"
    t0 = time.perf_counter()
    if not store.exists():
        build(write_digits(work / "digits"), store, encoder=args.encoder, progress=False)
    build_s = time.perf_counter() - t0
    with open_store(store) as st:
        rows = st.rows(st.select_set(None).name)
    rows_ = digit_interactions(rows.labels, [str(i) for i in rows.ids], args.users, args.seed)
    inter = work / f"interactions-{args.seed}.csv"
    with open(inter, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user", "item", "timestamp"])
        w.writerows(rows_)
    t0 = time.perf_counter()
    e, ex = evaluate_recommenders(store, inter, k=args.k, seed=args.seed, progress=False, keep=args.users)
    # context for the content figure: the chance of a hit for a recommender that knew the held-out
    # item's class exactly and picked k unseen items of it at random (tastes here are class-level)
    label = dict(zip((str(i) for i in rows.ids), rows.labels))
    size = {c: int((rows.labels == c).sum()) for c in np.unique(rows.labels)}

    def oracle(x):
        c = label[x["held_out"]]
        return min(1.0, args.k / max(1, size[c] - sum(label[i] == c for i in set(x["liked"]))))

    class_oracle = {"all": float(np.mean([oracle(x) for x in ex])),
                    "cold_start": float(np.mean([oracle(x) for x in ex if x["cold"]]))}
    out = {"class_oracle_hit_rate": class_oracle, "encoder": args.encoder, "items": len(rows), "users": args.users, "interactions": len(rows_), "k": args.k,
           "seed": args.seed, "build_s": build_s, "evaluate_s": time.perf_counter() - t0, "protocol": e.protocol,
           "methods": e.methods, "comparisons": e.comparisons}
    print(f"digits: {len(rows)} items ({args.encoder}), {args.users} users, {len(rows_)} interactions, seed {args.seed}; "
          f"{e.protocol['users_scored']} users scored, {e.protocol['cold_start_users']} with a cold-start held-out item")
    for view in ("all", "cold_start"):
        print(f"  {view}:")
        for m, x in e.methods.items():
            y = x[view]
            print(f"    {m:<9} hit-rate@{args.k} {y['hit_rate']:.3f} ({y['hit_rate_ci'][0]:.3f}-{y['hit_rate_ci'][1]:.3f})  "
                  f"nDCG@{args.k} {y['ndcg']:.3f} ({y['ndcg_ci'][0]:.3f}-{y['ndcg_ci'][1]:.3f})  coverage {y['coverage']:.3f}")
    print(f"  a class oracle (k random unseen items of the held-out item's class) would hit {class_oracle['all']:.3f} "
          f"(cold start {class_oracle['cold_start']:.3f})")
    for c in e.comparisons:
        print(f"  {c['view']}: content {c['hit_rate_a']:.3f} vs {c['b']} {c['hit_rate_b']:.3f}, p = {c['p_value']:.2g}: "
              f"{c['winner'] or 'no significant difference'}")
    return out


def clustered(n: int, dim: int, clusters: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    centers = np.random.default_rng(12345).normal(size=(clusters, dim)).astype(np.float32)
    rng = np.random.default_rng(seed)
    X = np.empty((n, dim), np.float32)
    lab = rng.integers(0, clusters, n)
    for s in range(0, n, 100_000):
        e = min(n, s + 100_000)
        X[s:e] = centers[lab[s:e]] + 0.8 * rng.normal(size=(e - s, dim)).astype(np.float32)
        X[s:e] /= np.linalg.norm(X[s:e], axis=1, keepdims=True)
        X[s:e] = X[s:e].astype(np.float16)
    return X, lab


def users_of(lab: np.ndarray, n_users: int, per_user: int, seed: int) -> list[np.ndarray]:
    """Each user: 1-3 taste clusters, `per_user` items drawn from them."""
    rng = np.random.default_rng(seed + 7)
    order = np.argsort(lab, kind="stable")
    start = np.searchsorted(lab[order], np.arange(lab.max() + 2))
    out = []
    for _ in range(n_users):
        tastes = rng.choice(lab.max() + 1, rng.integers(1, 4), replace=False)
        picks = [order[start[c] + rng.integers(0, max(1, start[c + 1] - start[c]))] for c in rng.choice(tastes, per_user)]
        out.append(np.unique(np.array(picks, dtype=np.int64)))
    return out


def scale(args) -> dict:
    from embedstore.recommend import Ask, Recommender
    from embedstore.search.index import ArrayRows, SearchIndex
    from embedstore.store.index import _new_index, _tune

    t0 = time.perf_counter()
    X, lab = clustered(args.items, args.dim, seed=args.seed)
    gen_s = time.perf_counter() - t0

    def read_rows(a, b):
        for s in range(a, b, 100_000):
            yield X[s : min(b, s + 100_000)]

    t0 = time.perf_counter()
    index = _new_index(args.dim, "inner_product", args.items, read_rows, args.seed)
    if hasattr(index, "is_trained") and not getattr(index, "ntotal", 0):
        for c in read_rows(0, args.items):
            index.add(np.ascontiguousarray(c))
    params = _tune(index, "inner_product", args.items, read_rows, args.seed) if args.items > 100_000 else {}
    index_s = time.perf_counter() - t0
    meta = {"kind": "ivfflat" if params else "flat", "params": params, "exact": not params}
    search = SearchIndex(index, meta, ArrayRows(X), "inner_product")
    X = search.rows.X  # one array: ArrayRows keeps it as is
    users = users_of(lab, args.users, args.per_user, args.seed)
    rss_before = peak_rss_mb()
    runs = []
    for diversity in [float(x) for x in str(args.diversity).split(",")]:
        rec = Recommender(search)
        t0 = time.perf_counter()
        purity, n_out = [], 0
        for s in range(0, len(users), 256):
            part = users[s : s + 256]
            answers = rec.recommend([Ask(X[u], None, u) for u in part], args.k, None, diversity)
            for u, a in zip(part, answers):
                assert not np.isin(a.rows, u).any()
                purity.append(np.isin(lab[a.rows], lab[u]).mean())
                n_out += len(a.rows)
        rec_s = time.perf_counter() - t0
        runs.append({"diversity": diversity, "plan": rec.plan.get("method"), "recommend_s": rec_s,
                     "users_per_s": args.users / rec_s, "items_per_s": n_out / rec_s, "taste_precision": float(np.mean(purity)),
                     "peak_rss_mb": peak_rss_mb(), "rss_mb_now": current_rss_mb()})
        r = runs[-1]
        print(f"scale: {args.items} items x {args.dim}, {args.users} users x {args.per_user} interactions, k={args.k}, "
              f"diversity {diversity:g}: {r['users_per_s']:.0f} users/s ({r['items_per_s']:.0f} recommended items/s) in {rec_s:.1f} s; "
              f"{r['plan']}; taste precision {r['taste_precision']:.3f}; peak RSS {r['peak_rss_mb']:.0f} MB, now {r['rss_mb_now']:.0f} MB")
    out = {"items": args.items, "dim": args.dim, "users": args.users, "interactions_per_user": args.per_user, "k": args.k,
           "generate_s": gen_s, "index_s": index_s, "index_params": params, "runs": runs,
           "peak_rss_mb_before_recommending": rss_before, "vectors_mb": args.items * args.dim * 4 / 2**20}
    print(f"  index built in {index_s:.0f} s ({params}); peak RSS before recommending {rss_before:.0f} MB "
          f"(vectors {out['vectors_mb']:.0f} MB, the IVF-Flat index a second copy)")
    return out


def store_path(args) -> dict:
    """`embed recommend --interactions` end to end, in a child process (its own peak RSS)."""
    import csv

    from embedstore.store import ItemRows, open_store

    work = Path(args.work or tempfile.mkdtemp(prefix="bench-rec-store-"))
    store = work / f"s{args.items}.h5"
    X, lab = clustered(args.items, args.dim, seed=args.seed)
    t0 = time.perf_counter()
    if not store.exists():
        attrs = {"encoder": "synthetic", "dim": args.dim, "dtype": "float16", "normalize": "l2", "modality": "image"}
        with open_store(store, mode="a", create=True) as st:
            for s in range(0, args.items, 100_000):
                e = min(args.items, s + 100_000)
                items = ItemRows()
                ids = [f"r{i:08d}" for i in range(s, e)]
                for i, c in zip(ids, lab[s:e]):
                    items.append(id=i, uri="", sha256=i, status="ok", label=f"c{c}")
                st.commit("synthetic-0000", attrs, items, ids, ids, X[s:e].astype(np.float16), {})
            st.refresh(index=True)
    store_s = time.perf_counter() - t0
    inter = work / "interactions.csv"
    with open(inter, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user", "item"])
        for u, items in enumerate(users_of(lab, args.users, args.per_user, args.seed)):
            w.writerows((f"user{u:05d}", f"r{j:08d}") for j in items)
    del X
    from peak import HWM  # the child's own peak RSS (benchmarks/peak.py)

    code = (HWM + "import json, sys; from embedstore.recommend import recommend_users; "
            f"r, _ = recommend_users({str(store)!r}, {str(inter)!r}, {str(work / 'recs.parquet')!r}, k={args.k}, "
            f"diversity={float(str(args.diversity).split(',')[0])}, progress=False); d = r.to_dict(); "
            "d['peak_rss_mb'] = hwm(); print(json.dumps(d))")
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    d = json.loads(res.stdout.strip().splitlines()[-1])
    out = {"items": args.items, "dim": args.dim, "users": args.users, "k": args.k, "store_s": store_s, "child_wall_s": wall,
           "recommend_s": d["seconds"], "users_per_s": d["users_per_s"], "rows_written": d["rows_written"],
           "plan": d["plan"].get("method"), "peak_rss_mb": d["peak_rss_mb"]}
    print(f"store: {args.items} items x {args.dim} (HDF5, {out['plan']}), {args.users} users: {d['users_per_s']:.0f} users/s "
          f"({d['seconds']:.1f} s, {d['rows_written']} rows to Parquet; child process {wall:.1f} s with imports and loading); "
          f"peak RSS {d['peak_rss_mb']:.0f} MB")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=["quality", "scale", "store"])
    ap.add_argument("--encoder", default="effnet-lite:lite0")
    ap.add_argument("--users", type=int, default=None)
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--per-user", type=int, default=20)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--diversity", default="0", help="scale: comma-separated values, each run on the same index (0,0.3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=None, help="folder for the store and files (kept between runs)")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args()
    if args.users is None:
        args.users = 1000 if args.part == "quality" else 10_000
    out = {"quality": quality, "scale": scale, "store": store_path}[args.part](args)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
