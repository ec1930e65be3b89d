"""Labelled vectors of a store split into train / val / test, in memory or streamed in chunks."""

from __future__ import annotations

import numpy as np

from ..errors import HeadError
from .splits import SPLIT_NAMES, TEST, TRAIN, UNUSED, VAL, assign_splits, take_shots


def exclusion_ids(exclude) -> tuple[frozenset, str | None, str]:
    """(ids, the file they came from or None, a phrase saying what they are) for `exclude`: an
    `Exclusions` (from `embedstore.sources.exclusions.read_exclusions`) or any collection of ids."""
    if exclude is None:
        return frozenset(), None, ""
    if hasattr(exclude, "ids") and hasattr(exclude, "describe"):
        return frozenset(str(i) for i in exclude.ids), str(exclude.path), exclude.describe()
    if isinstance(exclude, (str, bytes)) or not hasattr(exclude, "__iter__"):
        raise TypeError(f"exclude must be a collection of ids or an Exclusions, not {type(exclude).__name__}; "
                        "read a file with embedstore.sources.exclusions.read_exclusions(path)")
    ids = frozenset(str(i) for i in exclude)
    return ids, None, f"{len(ids)} ids given by the caller"


class SplitData:
    """The labelled rows of one vector set with split codes; loads the used rows into memory when
    they fit in `max_memory`, else streams them from the store on every pass."""

    def __init__(self, rows, val_fraction: float, test_fraction: float, seed: int, shots: int | None,
                 max_memory: int, classes: np.ndarray | None = None, fixed_codes: dict | None = None, exclude=None):
        """`fixed_codes` (item id -> TRAIN/VAL/TEST) reuses a split made elsewhere (e.g. by finetune).
        `exclude` (ids, or an Exclusions) leaves those items out of every split. The split is made
        first, on every labelled item, so the items that remain keep the split they have without
        exclusions: excluding k test items removes exactly those k, and runs with and without an
        exclusion list are scored on the same remaining items. `excluded` says what was removed."""
        self.rows = rows
        labelled = rows.labels != ""
        self.unlabelled = int((~labelled).sum())  # items without a label: in no split (said in the fit's notes)
        if fixed_codes is not None:
            labelled &= np.array([i in fixed_codes for i in rows.ids], dtype=bool)
        if not labelled.any():
            raise HeadError(f"vector set {rows.set_name} has no labelled items; build from class subfolders or a "
                            "manifest with a label column (a flat folder built with --no-labels has none)")
        found = np.unique(rows.labels[labelled])
        if len(found) < 2:
            raise HeadError(f"only one class ('{found[0]}') in {rows.set_name}; a classifier needs at least two")
        codes = np.full(len(rows), UNUSED, dtype=np.int8)
        if fixed_codes is not None:
            sub = np.array([fixed_codes[i] for i in rows.ids[labelled]], dtype=np.int8)
            self.split_how = "the split given by the caller"
        else:  # assigned in id order: the same items get the same split in every vector set of the store
            order = np.argsort(rows.ids[labelled], kind="stable")
            sub_sorted, self.split_how = assign_splits(rows.labels[labelled][order], rows.splits[labelled][order],
                                                       val_fraction, test_fraction, seed)
            sub = np.empty_like(sub_sorted)
            sub[order] = sub_sorted
        had_train = set(rows.labels[labelled][sub == TRAIN])
        self.excluded = self._exclude(exclude, rows, labelled, sub)
        self.shots = shots
        # the splits the final head is fitted on: with --shots the shots alone (validation only
        # chooses the settings), else train + val
        self.fit_splits = (TRAIN,) if shots else (TRAIN, VAL)
        if shots:
            order = np.argsort(rows.ids[labelled], kind="stable")
            sub[order] = take_shots(rows.labels[labelled][order], sub[order], shots, seed)
            self.split_how += f"; {shots} shots per class from train (seed {seed})"
        codes[labelled] = sub
        self.codes = codes
        self.classes = np.unique(rows.labels[codes == TRAIN]) if classes is None else np.asarray(classes)
        if self.excluded and classes is None:
            lost = sorted(had_train - set(self.classes))
            # a class the list removes whole (every item, in every split: e.g. the old items of a
            # renamed class folder) is gone from the head, and said; one that keeps val or test
            # items but no training items would be scored without having been taught: refused
            left = set(rows.labels[codes != UNUSED])
            kept = [c for c in lost if c in left]
            if kept or len(self.classes) < 2:
                raise HeadError(f"after leaving out {self.excluded['source']}, class(es) {', '.join(map(repr, kept or lost))} have "
                                f"no training items left ({len(self.classes)} class(es) remain); exclude fewer items, e.g. "
                                "with --exclude-kinds")
            self.excluded["classes_removed"] = lost
        cls_pos = {c: k for k, c in enumerate(self.classes)}
        self.y_idx = np.array([cls_pos.get(lab, -1) for lab in rows.labels], dtype=np.int64)
        used = codes != UNUSED
        self.memory_bytes = int(used.sum()) * rows.dim * 4
        self.in_memory = self.memory_bytes <= max_memory
        self._X = rows.load(used) if self.in_memory else None
        self._pos = np.full(len(rows), -1, dtype=np.int64)
        self._pos[used] = np.arange(int(used.sum()))

    @staticmethod
    def _exclude(exclude, rows, labelled: np.ndarray, sub: np.ndarray) -> dict:
        """Set the split code of excluded labelled items to UNUSED (in place, in `sub`); returns
        {} without an exclusion list, else what was left out per split and from where."""
        ids, path, source = exclusion_ids(exclude)
        if exclude is None:
            return {}
        in_store = np.fromiter((str(i) in ids for i in rows.ids), dtype=bool, count=len(rows))
        hit = in_store[labelled]
        per_split = {SPLIT_NAMES[c]: int((hit & (sub == c)).sum()) for c in (TRAIN, VAL, TEST)}
        removed = hit & (sub != UNUSED)
        removed_ids = sorted(str(i) for i in rows.ids[labelled][removed])
        sub[hit] = UNUSED
        n_in_store = int(in_store.sum())  # ids are unique within a vector set
        return {"source": source, "file": path, "ids": len(ids), "per_split": per_split, "removed": len(removed_ids),
                "not_in_a_split": n_in_store - len(removed_ids), "not_in_store": len(ids) - n_in_store,
                "removed_ids": removed_ids}

    def counts(self) -> dict:
        return {name: int((self.codes == c).sum()) for c, name in ((TRAIN, "train"), (VAL, "val"), (TEST, "test"))}

    def mask(self, *codes: int) -> np.ndarray:
        return np.isin(self.codes, codes)

    def arrays(self, *codes: int) -> tuple[np.ndarray, np.ndarray]:
        """(X, labels) in memory; only valid when `in_memory`."""
        m = self.mask(*codes)
        return self._X[self._pos[m]], self.rows.labels[m]

    def chunks(self, *codes: int):
        """A re-iterable source of (X, y_idx) chunks for `codes`; one chunk when in memory."""
        m = self.mask(*codes)
        if self.in_memory:
            X, yi = self._X[self._pos[m]], self.y_idx[m]
            return lambda: [(X, yi)]
        return lambda: ((X, self.y_idx[sel]) for sel, X in self.rows.chunks(m))

    def val_scores(self, head, *codes: int) -> tuple[float, float]:
        """(accuracy, mean log loss) of `head` on `codes`, chunk by chunk."""
        m = self.mask(*codes)
        hits = n = 0
        loss = 0.0
        chunks = [(self._X[self._pos[m]], np.flatnonzero(m))] if self.in_memory else [(X, sel) for sel, X in self.rows.chunks(m)]
        cls_pos = {c: k for k, c in enumerate(head.classes_)}
        for X, sel in chunks:
            if not len(X):
                continue
            P = head.predict_proba(X)
            y = np.array([cls_pos.get(lab, -1) for lab in self.rows.labels[sel]])
            known = y >= 0
            hits += int((P.argmax(axis=1) == y).sum())
            loss += float(-np.log(np.clip(P[np.flatnonzero(known), y[known]], 1e-12, None)).sum()) + 30.0 * (~known).sum()
            n += len(X)
        return (hits / n, loss / n) if n else (0.0, 0.0)

    def predict(self, head, *codes: int) -> tuple[np.ndarray, np.ndarray]:
        """(true labels, predicted labels) for `codes`, chunk by chunk."""
        m = self.mask(*codes)
        if self.in_memory:
            X, y = self.arrays(*codes)
            return y, head.predict(X) if len(X) else np.zeros(0, dtype=object)
        ys, ps = [], []
        for sel, X in self.rows.chunks(m):
            ys.append(self.rows.labels[sel])
            ps.append(head.predict(X))
        return (np.concatenate(ys), np.concatenate(ps)) if ys else (np.zeros(0, str), np.zeros(0, str))

    def mean_confidence(self, head, *codes: int) -> float:
        """The mean probability the head gives its own answer on `codes` (compared with its accuracy
        there, it says whether the probabilities are as sure as the head is right)."""
        total, n = 0.0, 0
        m = self.mask(*codes)
        chunks = [self.arrays(*codes)[0]] if self.in_memory else (X for _, X in self.rows.chunks(m))
        for X in chunks:
            if len(X):
                total += float(head.predict_proba(X).max(axis=1).sum())
                n += len(X)
        return total / n if n else float("nan")


__all__ = ["SplitData", "TRAIN", "VAL", "TEST"]
