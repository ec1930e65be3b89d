"""The protocol's cross-validation folds: stratified, shuffled with a seed, as many as the smallest
class allows. Used to choose regularisation (heads.fit), to calibrate linear heads out of fold and
for the audit's out-of-fold probabilities, so all three split the same items the same way."""

from __future__ import annotations

import numpy as np

CV_FOLDS = 5


def stratified_folds(labels: np.ndarray, seed: int = 0, k: int = CV_FOLDS) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fitted positions, held-out positions) per fold, into `labels`; min(k, smallest class) folds.
    Fewer than 2 items in some class gives no folds ([]): callers say what they do instead."""
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels)
    if len(labels) == 0:
        return []
    smallest = int(np.unique(labels, return_counts=True)[1].min())
    k = min(k, smallest)
    if k < 2:
        return []
    return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(labels)), labels))
