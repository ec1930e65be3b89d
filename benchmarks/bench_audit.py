"""`embed audit` against planted faults on the bundled digits, and its speed against one
`embed neighbors` pass on synthetic vectors.

    python benchmarks/bench_audit.py                 # planted faults (builds a store: ~1 min on 2 cores)
    python benchmarks/bench_audit.py --speed 100000  # + audit (no labels) vs neighbors on 100k x 512

Planted faults (embedstore.datasets.write_digits_with_faults, seed 0): 100 altered copies of random
items in their original's split (near-duplicates), 50 altered copies of training items placed in
test (leaks), 5% of labels changed. Copies are resized to 48-96 px, 1-3% cropped off one side and
JPEG re-encoded at quality 90-95; `--harsh` re-encodes at 55-90 with 2-6% crops and +-8% brightness,
which on 64 px digits the ImageNet encoder cannot tell from other handwriting of the same digit.

Pairs are scored as unordered id pairs: a found pair is a true positive when both items belong to
the same planted original (an original and its copy). Label issues: precision and recall of the
flipped items among the suspects, next to cleanlab's own pipeline (CleanLearning around
scikit-learn's LogisticRegression, its own cross-validation) on the same vectors.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def planted_store(root: Path, harsh: bool) -> tuple[Path, dict]:
    from embedstore.datasets import write_digits_with_faults
    from embedstore.ingest import build

    kw = dict(jpeg_quality=(55, 90), crop=(0.02, 0.06), brightness=0.08) if harsh else {}
    truth = write_digits_with_faults(root, seed=0, **kw)
    store = root / "digits.h5"
    b = build(truth["manifest"], store, encoder="effnet-lite:lite0", progress=False)
    print(f"built {store}: {b.vectors_in_set} items in {b.wall_s:.1f} s")
    return store, truth


def pair_scores(found: set, planted: set) -> tuple[float, float, int]:
    tp = len(found & planted)
    return (tp / len(found) if found else 1.0), tp / len(planted), tp


def score_audit(store: Path, truth: dict, vector_set: str | None = None) -> dict:
    from embedstore.audit import run_audit

    r = run_audit(store, vector_set=vector_set, progress=False)
    near_planted = {frozenset(p) for p in truth["near_pairs"]}
    leak_planted = {frozenset(p) for p in truth["leak_pairs"]}
    found = set()
    for c in r.detail["clusters"]:
        keep = c["keep"]
        found |= {frozenset((keep, m)) for m in c["members"] if m != keep}
    # a planted pair counts as found when both items sit in one reported cluster
    in_cluster = {}
    for n, c in enumerate(r.detail["clusters"]):
        for m in c["members"]:
            in_cluster[m] = n
    planted_all = near_planted | leak_planted
    hit = {p for p in planted_all if len({in_cluster.get(x, -1 - i) for i, x in enumerate(p)}) == 1}
    clustered_items = {m for c in r.detail["clusters"] for m in c["members"]}
    planted_items = {x for p in planted_all for x in p}
    dup_precision = len(clustered_items & planted_items) / max(len(clustered_items), 1)
    leaks_found = {frozenset((p["kept_side"], p["leaked"])) for p in r.detail["leaks"]}
    leak_prec, leak_rec, _ = pair_scores(leaks_found, leak_planted)
    flipped = set(truth["flipped"])
    suspects = {s["id"] for s in r.detail["suspects"]}
    tp = len(suspects & flipped)
    return {
        "calibration": r.calibration["how"],
        "near_duplicates": {"planted_pairs": len(planted_all), "recall": len(hit) / len(planted_all),
                            "precision_items": dup_precision, "clusters": r.near_duplicates["clusters"],
                            "items_in_clusters": len(clustered_items)},
        "leaks": {"planted": len(leak_planted), "found": len(leaks_found), "recall": leak_rec, "precision": leak_prec},
        "label_issues": {"flipped": len(flipped), "suspects": len(suspects), "recall": tp / len(flipped),
                         "precision": tp / max(len(suspects), 1), "C": r.label_issues.get("C"),
                         "out_of_fold_accuracy": r.label_issues.get("out_of_fold_accuracy")},
        "seconds": r.seconds,
        "verdict": r.verdict,
    }


def cleanlab_filters(store: Path, truth: dict) -> dict:
    """Every cleanlab filter on the same out-of-fold probabilities the audit uses."""
    from cleanlab.filter import find_label_issues

    from embedstore.audit.labels import find_label_issues as ours
    from embedstore.store import open_store

    with open_store(store) as st:
        rows = st.rows(st.select_set(None).name)
        X, y, ids = rows.load(), np.asarray(rows.labels), np.asarray(rows.ids)
    li = ours(X, y, np.arange(len(y)))
    yi = np.searchsorted(li.classes, y)
    flipped = set(truth["flipped"])
    out = {}
    for fb in ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "predicted_neq_given"):
        sus = set(ids[find_label_issues(yi, li.proba, filter_by=fb)])
        tp = len(sus & flipped)
        out[fb] = {"suspects": len(sus), "recall": round(tp / len(flipped), 3), "precision": round(tp / max(len(sus), 1), 3)}
    return out


def cleanlab_own(store: Path, truth: dict) -> dict:
    """cleanlab's whole pipeline: CleanLearning(LogisticRegression) finds issues with its own CV."""
    import warnings

    from cleanlab.classification import CleanLearning
    from sklearn.linear_model import LogisticRegression

    from embedstore.store import open_store

    with open_store(store) as st:
        rows = st.rows(st.select_set(None).name)
        X, y, ids = rows.load(), np.asarray(rows.labels), np.asarray(rows.ids)
    classes, yi = np.unique(y, return_inverse=True)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        issues = CleanLearning(LogisticRegression(max_iter=1000), seed=0).find_label_issues(X, yi)
    sus = set(ids[issues["is_label_issue"].to_numpy()])
    flipped = set(truth["flipped"])
    tp = len(sus & flipped)
    return {"suspects": len(sus), "recall": tp / len(flipped), "precision": tp / max(len(sus), 1),
            "seconds": time.perf_counter() - t0}


def speed(n: int, d: int = 512) -> dict:
    """audit --no-labels vs one neighbors pass on the same synthetic store (ratio in one run)."""
    from embedstore.audit import run_audit
    from embedstore.search.batch import neighbors

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import synthetic_store  # noqa: E402 - the tests' writer of synthetic stores (clustered unit vectors)

    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "syn.h5"
        synthetic_store(store, n, d, shards=max(1, n // 50000))
        t0 = time.perf_counter()
        neighbors(store, Path(tmp) / "knn.parquet", k=10, progress=False)
        t_nb = time.perf_counter() - t0
        t0 = time.perf_counter()
        r = run_audit(store, labels=False, progress=False)
        t_audit = time.perf_counter() - t0
    return {"items": n, "dim": d, "neighbors_s": t_nb, "audit_no_labels_s": t_audit, "ratio": t_audit / t_nb,
            "index_plan": r.seconds.get("index_plan")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", help="reuse a store built from the planted folder (with --truth)")
    ap.add_argument("--truth", help="planted.json of that folder")
    ap.add_argument("--set", dest="vector_set", help="the vector set to audit (with --store, when it has several)")
    ap.add_argument("--audit-only", action="store_true", help="skip the cleanlab comparisons")
    ap.add_argument("--harsh", action="store_true", help="harsher copies (see the docstring)")
    ap.add_argument("--speed", type=int, default=0, help="also time audit vs neighbors on this many synthetic vectors")
    args = ap.parse_args()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.store:
            store, truth = Path(args.store), json.loads(Path(args.truth).read_text())
        else:
            store, truth = planted_store(Path(tmp) / "planted", args.harsh)
        out["audit"] = score_audit(store, truth, args.vector_set)
        if not args.audit_only:
            out["cleanlab_filters_same_probabilities"] = cleanlab_filters(store, truth)
            out["cleanlab_clean_learning"] = cleanlab_own(store, truth)
    if args.speed:
        out["speed"] = speed(args.speed)
    print(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
