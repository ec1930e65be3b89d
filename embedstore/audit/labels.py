"""Label issues: out-of-fold probabilities from a cross-validated logistic head, then cleanlab.

The folds are the evaluation protocol's (`evaluation.folds.stratified_folds`: stratified, seeded);
the head's C is chosen on the out-of-fold log loss over a short grid, so every probability comes
from a head that never saw that item. Confident learning itself is cleanlab's
`filter.find_label_issues` and `rank.get_label_quality_scores`, not a rewrite.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

C_GRID = (0.1, 1.0, 10.0, 100.0, 1000.0)
# cleanlab's `filter_by`: prune_by_class removes, per given class, the items the model trusts least
# there, as many as the estimated noise says. On the bundled digits with 5% flipped labels it finds
# 0.84 of them at precision 0.83; the default prune_by_noise_rate 0.76 at 0.77 (benchmarks/bench_audit.py
# prints every filter on the same probabilities).
FILTER_BY = "prune_by_class"


@dataclass
class LabelIssues:
    rows: np.ndarray  # row positions of the suspects, most suspicious first
    given: np.ndarray  # their given labels
    suggested: np.ndarray  # the out-of-fold head's label
    quality: np.ndarray  # cleanlab's label quality score (lower = more suspect)
    summary: dict = field(default_factory=dict)
    proba: np.ndarray | None = None  # the out-of-fold probabilities of every row given (benchmarks compare filters on them)
    classes: np.ndarray | None = None


def out_of_fold_proba(X: np.ndarray, y: np.ndarray, seed: int = 0, grid=C_GRID, progress: bool = False):
    """(probabilities (n, K) from heads that never saw each row, classes, chosen C, folds, per-C log loss)."""
    from sklearn.exceptions import ConvergenceWarning

    from ..evaluation.folds import stratified_folds
    from ..heads import head_class
    from ..progress import progress_bar

    classes, y_idx = np.unique(y, return_inverse=True)
    folds = stratified_folds(y_idx, seed)
    k = len(folds)
    cls = head_class("logistic")
    best = None
    losses = {}
    bar = progress_bar(len(grid) * len(folds), "audit: out-of-fold head", "fit", progress)
    for C in grid:
        P = np.zeros((len(X), len(classes)))
        for tr, te in folds:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                head = cls(C=C).fit(X[tr], classes[y_idx[tr]])
            pos = {c: j for j, c in enumerate(head.classes_)}
            Pf = head.predict_proba(X[te])
            for j, c in enumerate(classes):  # a class absent from a training fold keeps probability 0
                if c in pos:
                    P[te, j] = Pf[:, pos[c]]
            bar.update(1)
        loss = float(-np.log(np.clip(P[np.arange(len(X)), y_idx], 1e-12, None)).mean())
        losses[C] = loss
        if best is None or loss < best[0]:
            best = (loss, C, P)
    bar.close()
    return best[2], classes, best[1], k, losses


def find_label_issues(X: np.ndarray, y: np.ndarray, row_pos: np.ndarray, seed: int = 0, progress: bool = False) -> LabelIssues:
    """Suspected label errors among rows `row_pos` (vectors X, given labels y)."""
    from cleanlab.filter import find_label_issues as cl_find
    from cleanlab.rank import get_label_quality_scores

    P, classes, C, k, losses = out_of_fold_proba(X, y, seed, progress=progress)
    y_idx = np.searchsorted(classes, y)
    P = P / np.clip(P.sum(axis=1, keepdims=True), 1e-12, None)
    # n_jobs=1: with more, cleanlab forks a multiprocessing pool, and a fork of a threaded process (the
    # server's worker threads, torch's) can inherit a held lock: `embed serve`'s /api/audit once hung
    # for good in such a child. The pruning it spreads is cheap next to the cross-validation above.
    ranked = cl_find(y_idx, P, filter_by=FILTER_BY, return_indices_ranked_by="self_confidence", n_jobs=1)
    quality = get_label_quality_scores(y_idx, P)
    oof_acc = float((P.argmax(axis=1) == y_idx).mean())
    majority = float(np.bincount(y_idx).max() / len(y_idx)) if len(y_idx) else 0.0
    summary = {"items": int(len(y)), "classes": int(len(classes)), "folds": k, "C": C, "log_loss_by_C": losses,
               "out_of_fold_accuracy": oof_acc, "majority_share": majority, "suspects": int(len(ranked)),
               "how": (f"{k}-fold stratified cross-validation (seed {seed}) of a logistic head, C = {C:g} chosen on "
                       f"out-of-fold log loss; cleanlab find_label_issues ({FILTER_BY}) on the out-of-fold probabilities")}
    return LabelIssues(row_pos[ranked], y[ranked], classes[P[ranked].argmax(axis=1)], quality[ranked], summary, P, classes)
