"""The logistic head's whole C sweep against one default scikit-learn LogisticRegression fit.

On N x D synthetic embeddings with K classes (class structure in a low-rank subspace plus noise,
L2-normalised, like encoder outputs), split 70/15/15 as `embed fit-head` does, it times:
  ours:    the 9-value C sweep (1e-4 .. 1e4) on train, scored on val, plus the refit on train+val
  sklearn: one LogisticRegression(max_iter=1000) fit (default C=1) on train+val
and prints both times, their ratio, and the test accuracy of ours against scikit-learn's fitted at
the C our sweep chose. Both run in this process after imports and a warm-up, on the same arrays.

    .venv/bin/python benchmarks/bench_heads.py                  # 50k x 512, 10 classes
    .venv/bin/python benchmarks/bench_heads.py --n 5000 --dim 128
    .venv/bin/python benchmarks/bench_heads.py --store embedstore-demo/digits.h5   # real vectors
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def make_embeddings(n: int, dim: int, k: int, sep: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    latent = 64
    A = rng.normal(size=(latent, dim)) / np.sqrt(np.arange(1, latent + 1))[:, None]
    centers = rng.normal(size=(k, latent)) * sep
    y = rng.integers(0, k, n)
    X = (centers[y] + rng.normal(size=(n, latent))) @ A + 0.5 * rng.normal(size=(n, dim))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X.astype(np.float16).astype(np.float32), np.array([f"class{c}" for c in y])  # float16 like the store


class ArrayRows:
    """A vector set held in memory, shaped like the store's SetRows, so the real sweep code runs."""

    def __init__(self, X, labels):
        self.X, self.labels = X, labels
        self.ids = np.array([f"item{i}" for i in range(len(X))])
        self.splits = np.array([""] * len(X))
        self.uris = self.ids
        self.set_name, self.dim = "bench", X.shape[1]

    def __len__(self):
        return len(self.X)

    def load(self, mask=None):
        return self.X if mask is None else self.X[mask]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--sep", type=float, default=0.25, help="class separation (0.25 gives ~68%% accuracy)")
    ap.add_argument("--store", default=None, help="use this store's labelled vectors instead of synthetic ones")
    args = ap.parse_args()

    import torch
    from sklearn.linear_model import LogisticRegression

    from embedstore.heads.logistic import LogisticHead
    from embedstore.heads.data import TEST, TRAIN, VAL, SplitData
    from embedstore.embedding.device import resolve_device
    from embedstore.heads.fit import refit, sweep

    if args.store:
        from embedstore.store import open_store

        with open_store(args.store) as st:
            rows = st.rows(st.select_set().name)
        X = rows.load()
        labels = rows.labels
    else:
        X, labels = make_embeddings(args.n, args.dim, args.classes, args.sep)
    data = SplitData(ArrayRows(X, labels), 0.15, 0.15, seed=0, shots=None, max_memory=1 << 40)
    dev = str(resolve_device("auto"))
    print(f"machine: {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, device {dev}, "
          f"GPU: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}")
    print(f"data: {args.store or 'synthetic'}: {X.shape[0]} x {X.shape[1]}, {len(set(labels))} classes; {data.counts()}")
    LogisticHead().fit(X[:200], labels[:200])  # warm-up: torch's first-call set-up is not the sweep's cost

    t0 = time.perf_counter()
    curve, (val_acc, best_c, snapshot) = sweep(LogisticHead, data, list(LogisticHead.sweep_grid), {}, dev, progress=False)
    head = refit(LogisticHead, data, best_c, snapshot, {}, dev)
    ours_s = time.perf_counter() - t0
    Xte, yte = data.arrays(TEST)
    ours_acc = float((head.predict(Xte) == yte).mean())

    Xtv, ytv = data.arrays(TRAIN, VAL)
    t0 = time.perf_counter()
    LogisticRegression(max_iter=1000).fit(Xtv, ytv)
    sk_default_s = time.perf_counter() - t0
    sk = LogisticRegression(C=best_c, max_iter=1000).fit(Xtv, ytv)
    sk_acc = float((sk.predict(Xte) == yte).mean())

    print("\nC sweep (val accuracy, seconds): " + ", ".join(f"{c['value']:g}: {c['val_accuracy']:.4f} {c['fit_s']:.2f}s" for c in curve))
    print(f"chosen C = {best_c:g}")
    print(f"\n{'':36} {'seconds':>8}")
    print(f"{'ours: 9-value sweep + refit':36} {ours_s:8.2f}")
    print(f"{'sklearn: one default fit (C=1)':36} {sk_default_s:8.2f}")
    print(f"ratio sweep / single fit: {ours_s / sk_default_s:.2f}  (goal <= 1.0)")
    print(f"test accuracy at C={best_c:g}: ours {ours_acc:.4f}, sklearn {sk_acc:.4f}, "
          f"difference {100 * (ours_acc - sk_acc):+.2f} points (goal within 0.5)")
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    Xtr, ytr = data.arrays(TRAIN)
    Xva, yva = data.arrays(VAL)
    scores = [(make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000)).fit(Xtr, ytr).score(Xva, yva), -c)
              for c in LogisticHead.sweep_grid]
    c_ref = -max(scores)[1]
    ref = make_pipeline(StandardScaler(), LogisticRegression(C=c_ref, max_iter=1000)).fit(Xtv, ytv).score(Xte, yte)
    print(f"careful sklearn pipeline (StandardScaler + LogisticRegression, C={c_ref:g} chosen on the same val split): "
          f"test accuracy {ref:.4f}; ours {ours_acc:.4f} ({100 * (ours_acc - ref):+.2f} points)")


if __name__ == "__main__":
    main()
