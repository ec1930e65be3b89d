"""Which items a model was fitted or selected on, by content: a saved head keeps the 64-bit
prefixes of the sha256 of the items it was trained and chosen on, so scoring it later on any of
them (under any id, in any store or folder) is detected and said."""

from __future__ import annotations

import numpy as np


def item_keys(sha256_hex) -> tuple[np.ndarray, np.ndarray]:
    """(uint64 key per item, valid mask): the first 16 hex digits of each sha256; items without a
    hash (an empty string) get key 0 and valid False."""
    shas = [str(s) for s in sha256_hex]
    valid = np.array([len(s) >= 16 for s in shas], dtype=bool)
    return np.array([int(s[:16], 16) if ok else 0 for s, ok in zip(shas, valid)], dtype=np.uint64), valid


def content_keys(sha256_hex) -> np.ndarray:
    """The distinct uint64 keys of hex sha256 strings (`item_keys`); empty strings are skipped."""
    keys, valid = item_keys(sha256_hex)
    return np.unique(keys[valid])


def seen_mask(sha256_hex, keys: np.ndarray | None) -> np.ndarray:
    """True where an item's content is among `keys` (a model's training and selection items)."""
    if keys is None or not len(keys):
        return np.zeros(len(list(sha256_hex)), dtype=bool)
    mine, valid = item_keys(sha256_hex)
    return np.isin(mine, keys) & valid
