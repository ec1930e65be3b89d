"""Paired comparisons on the same test items: McNemar's exact test for accuracy, a paired bootstrap
for balanced accuracy. A winner is named only when the difference is significant (p < 0.05)."""

from __future__ import annotations

import numpy as np

from .intervals import balanced_accuracy_from

ALPHA = 0.05


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """Exact two-sided McNemar test on paired right/wrong outcomes (scipy's binomial test on the
    discordant pairs; statsmodels is not a dependency for one formula)."""
    from scipy.stats import binomtest

    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    p = 1.0 if only_a + only_b == 0 else float(binomtest(only_a, only_a + only_b, 0.5).pvalue)
    return {"n": int(len(a)), "only_a_right": only_a, "only_b_right": only_b, "accuracy_a": float(a.mean()) if len(a) else 0.0,
            "accuracy_b": float(b.mean()) if len(b) else 0.0, "p_value": p}


def paired_bootstrap_balanced(y: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, n_boot: int = 2000,
                              seed: int = 0) -> dict:
    """Difference in balanced accuracy (a - b) with a 95% interval and a two-sided bootstrap p-value,
    resampling the same items for both."""
    y, pa, pb = (np.asarray(v).astype(str) for v in (y, pred_a, pred_b))
    labels = np.unique(np.concatenate([y, pa, pb]))
    pos = {lab: i for i, lab in enumerate(labels)}
    yi = np.array([pos[v] for v in y])
    ai, bi = np.array([pos[v] for v in pa]), np.array([pos[v] for v in pb])
    k, n = len(labels), len(y)
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_boot)
    for t in range(n_boot):
        idx = rng.integers(0, n, n)
        ca, cb = np.zeros((k, k), np.int64), np.zeros((k, k), np.int64)
        np.add.at(ca, (yi[idx], ai[idx]), 1)
        np.add.at(cb, (yi[idx], bi[idx]), 1)
        diffs[t] = balanced_accuracy_from(ca) - balanced_accuracy_from(cb)
    ca, cb = np.zeros((k, k), np.int64), np.zeros((k, k), np.int64)
    np.add.at(ca, (yi, ai), 1)
    np.add.at(cb, (yi, bi), 1)
    diff = float(balanced_accuracy_from(ca) - balanced_accuracy_from(cb))
    p = float(min(1.0, 2 * min((diffs <= 0).mean(), (diffs >= 0).mean()))) if n else 1.0
    lo, hi = np.quantile(diffs, [0.025, 0.975]) if n else (0.0, 0.0)
    return {"difference": diff, "ci": [float(lo), float(hi)], "p_value": p}


def compare(name_a: str, name_b: str, y: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray) -> dict:
    """Both tests on the same items, and a verdict that names a winner only when significant."""
    y = np.asarray(y).astype(str)
    mc = mcnemar(np.asarray(pred_a).astype(str) == y, np.asarray(pred_b).astype(str) == y)
    bal = paired_bootstrap_balanced(y, pred_a, pred_b)
    d = mc["accuracy_a"] - mc["accuracy_b"]
    if mc["p_value"] < ALPHA and d != 0:
        win, lose = (name_a, name_b) if d > 0 else (name_b, name_a)
        verdict = (f"{win} is more accurate than {lose}: {abs(d) * 100:.1f} points on the same {mc['n']} items "
                   f"(McNemar p = {mc['p_value']:.3g})")
        winner = win
    else:
        verdict = (f"no significant difference on {mc['n']} items (accuracy {mc['accuracy_a']:.4f} vs {mc['accuracy_b']:.4f}, "
                   f"McNemar p = {mc['p_value']:.3g})")
        winner = None
    return {"a": name_a, "b": name_b, "n": mc["n"], "accuracy": mc, "balanced_accuracy": bal, "winner": winner,
            "verdict": verdict}
