"""Synthetic rows for the store benchmarks, committed as a build commits them: ids, labels, splits
and uris like a real image folder's (100 classes), unit float16 vectors, one shard per `part` rows."""

from __future__ import annotations

import numpy as np

CLASSES = [f"class_{c:03d}" for c in range(100)]


def commit_rows(st, lo: int, hi: int, part: int, dim: int, rng) -> None:
    """Commit rows [lo, hi) to the open store `st` (vector set synthetic-0000), `part` rows a shard."""
    from embedstore.store import ItemRows

    attrs = {"encoder": "synthetic", "dim": dim, "dtype": "float16", "normalize": "l2", "modality": "image"}
    for s in range(lo, hi, part):
        e = min(hi, s + part)
        X = rng.normal(size=(e - s, dim)).astype(np.float32)
        X /= np.linalg.norm(X, axis=1, keepdims=True)
        items = ItemRows()
        ids = [f"{CLASSES[i % 100]}/img_{i:08d}.jpg" for i in range(s, e)]
        for i, vid in zip(range(s, e), ids):
            items.append(id=vid, uri=f"/data/photos/{vid}", sha256=f"{i:064x}", status="ok", label=CLASSES[i % 100],
                         split=("train", "val", "test")[i % 3], size=1000 + i, mtime_ns=i)
        st.commit("synthetic-0000", attrs, items, ids, [f"{i:064x}" for i in range(s, e)], X.astype(np.float16), {})
