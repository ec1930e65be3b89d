"""Train / validation / test assignment: the store's split column, else a seeded stratified split."""

from __future__ import annotations

import numpy as np

from ..errors import HeadError

TRAIN, VAL, TEST, UNUSED = 0, 1, 2, -1
SPLIT_NAMES = {TRAIN: "train", VAL: "val", TEST: "test"}
from ..sources.items import SPLIT_NAMES as _ALIASES  # noqa: E402 - the one list of split names (ranks = the codes above)


def _stratified(labels: np.ndarray, candidates: np.ndarray, fraction: float, rng, what: str) -> np.ndarray:
    """Pick about `fraction` of `candidates` per class (at least one each); returns positions."""
    picked = []
    for lab in np.unique(labels[candidates]):
        members = candidates[labels[candidates] == lab]
        take = max(1, int(round(fraction * len(members))))
        if len(members) - take < 1:
            raise HeadError(f"class '{lab}' has {len(members)} item(s): too few to also hold out a {what} part; "
                            "add items, lower --val-fraction/--test-fraction, or give the store a split column")
        picked.append(rng.permutation(members)[:take])
    return np.concatenate(picked) if picked else np.zeros(0, dtype=np.int64)


def assign_splits(labels: np.ndarray, store_splits: np.ndarray, val_fraction: float, test_fraction: float,
                  seed: int) -> tuple[np.ndarray, str]:
    """Split codes per item (TRAIN/VAL/TEST/UNUSED) and a sentence saying how they were chosen."""
    if not 0 <= val_fraction < 1:
        raise HeadError(f"--val-fraction must be at least 0 and below 1, not {val_fraction} (0: choose by cross-validation on train)")
    if not 0 <= test_fraction < 1:
        raise HeadError(f"--test-fraction must be at least 0 and below 1, not {test_fraction} (0: no test split)")
    if val_fraction + test_fraction >= 0.9:
        raise HeadError(f"--val-fraction + --test-fraction is {val_fraction + test_fraction:.2f}; leave at least 10% for training")
    rng = np.random.default_rng(seed)
    codes = np.full(len(labels), UNUSED, dtype=np.int8)
    given = np.array([_ALIASES.get(str(s).strip().lower(), UNUSED) if s else UNUSED for s in store_splits], dtype=np.int8)
    if (given != UNUSED).any():
        codes[:] = given
        if not (codes == TRAIN).any():
            raise HeadError("the store's split column names no training items (expected 'train'); fix the manifest's split column")
        how = "the store's split column"
        taught = set(np.unique(labels[codes == TRAIN]).tolist())
        untaught = sorted(set(np.unique(labels[codes != UNUSED]).tolist()) - taught)
        if len(taught) < 2:
            raise HeadError(f"the store's split column gives training items of one class only ('{next(iter(taught))}'); "
                            f"class {', '.join(repr(c) for c in untaught[:5]) or '(none)'} has none in train and a classifier "
                            "needs two: put some of its items in the train split, or rebuild without the split column "
                            "and let fit-head split per class")
        if untaught:
            off_val = (codes == VAL) & np.isin(labels, untaught)
            codes[off_val] = UNUSED  # the regularisation is chosen among the classes the head can learn
            how += (f" (class {', '.join(repr(c) for c in untaught[:5])} has no training items: the head cannot predict it, "
                    "its test items count as errors" + (f", and its {int(off_val.sum())} validation item(s) are not used" if off_val.any() else "") + ")")
        unknown = sorted({str(s) for s, g in zip(store_splits, given) if g == UNUSED and str(s).strip()})
        if unknown:
            how += f" (items with split {', '.join(unknown[:5])} are not used)"
        blank = sum(1 for s in store_splits if not s or not str(s).strip())
        if blank:  # left out as an unknown split is, and said: they were dropped without a word
            how += (f" ({blank} labelled item(s) have no split and are not used: give them one in the manifest's split "
                    "column, or rebuild without it and let fit-head split per class)")
        if not (codes == VAL).any() and val_fraction > 0:
            codes[_stratified(labels, np.flatnonzero(codes == TRAIN), val_fraction, rng, "validation")] = VAL
            how += f"; validation: {val_fraction:.0%} of train per class (seed {seed})"
        if not (codes == TEST).any() and test_fraction > 0:
            codes[_stratified(labels, np.flatnonzero(codes == TRAIN), test_fraction, rng, "test")] = TEST
            how += f"; test: {test_fraction:.0%} of train per class (seed {seed})"
        return codes, how
    names, counts = np.unique(labels, return_counts=True)
    if counts.min() < 3:
        few = [f"'{n}' ({c})" for n, c in zip(names, counts) if c < 3]
        small = ", ".join(few[:5]) + (f" and {len(few) - 5} more of the {len(names)} classes" if len(few) > 5 else "")
        raise HeadError(f"class {small} has too few labelled items: a train/val/test split needs at least 3 per class; "
                        "add items, a split column, or --exclude its ids (`embed ls STORE --where label=NAME`)")
    codes[:] = TRAIN
    all_rows = np.arange(len(labels))
    if test_fraction > 0:
        codes[_stratified(labels, all_rows, test_fraction, rng, "test")] = TEST
    if val_fraction > 0:
        codes[_stratified(labels, np.flatnonzero(codes == TRAIN), val_fraction / (1 - test_fraction), rng, "validation")] = VAL
    test = f"test {test_fraction:.0%}" if test_fraction > 0 else "no test split (--test-fraction 0)"
    return codes, f"seeded stratified split (seed {seed}): val {val_fraction:.0%}, {test}"


def take_shots(labels: np.ndarray, codes: np.ndarray, shots: int, seed: int) -> np.ndarray:
    """Keep `shots` seeded training items per class; the rest of train becomes unused."""
    if shots < 1:
        raise HeadError(f"--shots must be at least 1, not {shots}")
    rng = np.random.default_rng(seed + 1)
    codes = codes.copy()
    train = np.flatnonzero(codes == TRAIN)
    for lab in np.unique(labels[train]):
        members = train[labels[train] == lab]
        if len(members) < shots:
            raise HeadError(f"--shots {shots}: class '{lab}' has only {len(members)} training item(s); lower --shots")
        codes[rng.permutation(members)[shots:]] = UNUSED
    return codes
