"""Which items a model was fitted or selected on, by content: a saved head keeps the 64-bit
prefixes of the sha256 of the items it was trained and chosen on, so scoring it later on any of
them (under any id, in any store or folder) is detected and said."""

from __future__ import annotations

import numpy as np


def content_keys(sha256_hex) -> np.ndarray:
    """uint64 keys from hex sha256 strings (the first 16 hex digits); empty strings are skipped."""
    vals = [int(s[:16], 16) for s in map(str, sha256_hex) if len(s) >= 16]
    return np.unique(np.asarray(vals, dtype=np.uint64))


def seen_mask(sha256_hex, keys: np.ndarray | None) -> np.ndarray:
    """True where an item's content is among `keys` (a model's training and selection items)."""
    shas = [str(s) for s in sha256_hex]
    if keys is None or not len(keys):
        return np.zeros(len(shas), dtype=bool)
    mine = np.array([int(s[:16], 16) if len(s) >= 16 else 0 for s in shas], dtype=np.uint64)
    return np.isin(mine, keys) & np.array([len(s) >= 16 for s in shas], dtype=bool)
