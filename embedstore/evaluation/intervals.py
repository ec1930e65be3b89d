"""95% intervals: Wilson for proportions (accuracy), bootstrap for the rest (balanced accuracy,
macro-F1, AUROC).

The bootstrap of a metric that depends only on the confusion matrix resamples the matrix itself
(its cell frequencies), so 2,000 draws cost O(2,000 x K^2) however many items there are
(scikit-learn has no interval API, and resampling item indices would cost O(2,000 x n))."""

from __future__ import annotations

import math

import numpy as np

Z95 = 1.959963984540054
N_BOOT = 2000


def wilson(k: int | float, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k / n (k may be given as the proportion times n)."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(max(0.0, p * (1 - p) / n + z * z / (4 * n * n))) / d
    # at k = 0 (k = n) the bound is exactly 0 (1); the formula leaves a rounding residue such as 1e-17
    return (0.0 if k <= 0 else max(0.0, c - h)), (1.0 if k >= n else min(1.0, c + h))


def balanced_accuracy_from(cm: np.ndarray) -> np.ndarray:
    """Balanced accuracy of confusion matrices (..., K, K) (rows true): mean recall over present classes."""
    support = cm.sum(-1)
    recall = np.divide(np.diagonal(cm, axis1=-2, axis2=-1), support, out=np.zeros(support.shape), where=support > 0)
    present = (support > 0).sum(-1)
    return recall.sum(-1) / np.maximum(present, 1)


def macro_f1_from(cm: np.ndarray) -> np.ndarray:
    """Macro-F1 of confusion matrices (..., K, K), as scikit-learn's f1_score(average="macro", zero_division=0)."""
    tp = np.diagonal(cm, axis1=-2, axis2=-1).astype(float)
    denom = cm.sum(-1) + cm.sum(-2)  # 2tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros(tp.shape), where=denom > 0)
    return f1.mean(-1)


def confusion_bootstrap(cm: np.ndarray, stat, n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, float]:
    """95% interval of stat(confusion matrix) by a Bayesian bootstrap of the cell frequencies:
    Dirichlet(counts + 1/K^2 per cell). Resampling the observed cells alone would say [1, 1] for a
    perfect score on 4 items; the prior (one pseudo-item in all, spread over every cell) keeps
    small perfect results honestly uncertain and vanishes as items grow. The prior also pulls a
    perfect (or zero) score's draws inwards, so the interval is widened to hold the observed value:
    an interval that excludes its own estimate would be read as a contradiction."""
    cm = np.asarray(cm, dtype=np.float64)
    n = float(cm.sum())
    if n == 0:
        return 0.0, 1.0
    rng = np.random.default_rng(seed)
    draws = rng.dirichlet(cm.ravel() + 1.0 / cm.size, size=n_boot).reshape(n_boot, *cm.shape) * n
    vals = stat(draws)
    lo, hi = np.quantile(vals, [0.025, 0.975])
    seen = float(stat(cm[None])[0])
    return float(min(lo, seen)), float(max(hi, seen))


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """AUROC of positive vs negative scores (higher = positive), ties counted half (Mann-Whitney)."""
    from scipy.stats import rankdata

    r = rankdata(np.concatenate([pos, neg]))[: len(pos)]
    return float((r.sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def auprc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Average precision (area under the precision-recall curve) of positive vs negative scores."""
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(np.r_[np.ones(len(pos)), np.zeros(len(neg))], np.concatenate([pos, neg])))


def auroc_interval(y: np.ndarray, scores: np.ndarray, n_boot: int = 500, seed: int = 0,
                   max_items: int = 20000, stat=auroc) -> tuple[float, float]:
    """Percentile 95% interval of the AUROC (or of `stat(pos, neg)`, e.g. `auprc`; positives where y
    is true), resampling positives and negatives separately so every resample has both. Above
    `max_items` the interval comes from a stratified subsample of that size: wider than it need be,
    never narrower."""
    y = np.asarray(y).astype(bool)
    scores = np.asarray(scores, dtype=float)
    pos, neg = scores[y], scores[~y]
    if not len(pos) or not len(neg):
        return 0.0, 1.0
    seen = stat(pos, neg)
    rng = np.random.default_rng(seed)
    if len(scores) > max_items:
        f = max_items / len(scores)
        pos = rng.choice(pos, max(1, int(len(pos) * f)), replace=False)
        neg = rng.choice(neg, max(1, int(len(neg) * f)), replace=False)
    vals = [stat(pos[rng.integers(0, len(pos), len(pos))], neg[rng.integers(0, len(neg), len(neg))]) for _ in range(n_boot)]
    lo, hi = np.quantile(vals, [0.025, 0.975])
    return float(min(lo, seen)), float(max(hi, seen))  # it holds its own estimate (1.0 and 0.99999999 are one value)


def fmt_ci(value: float, ci) -> str:
    """'0.9412 (95% CI 0.8925-0.9694)'."""
    if ci is None:
        return f"{value:.4f}"
    return f"{value:.4f} (95% CI {ci[0]:.4f}-{ci[1]:.4f})"
