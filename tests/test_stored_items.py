"""The item table as a build's plan reads it (store/stored.py): column-wise, checked, the same rows
as `Store.items()`."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from embedstore.errors import StoreError
from embedstore.store import ItemRows, open_store


def _store(path, n=50):
    attrs = {"encoder": "synthetic", "dim": 4, "dtype": "float32", "normalize": "l2", "modality": "image"}
    X = np.eye(4, dtype=np.float32)[np.arange(n) % 4]
    with open_store(path, mode="a", create=True) as st:
        for part in np.array_split(np.arange(n), 3):
            items = ItemRows()
            ids = [f"id{i:03d}" for i in part]
            for i in part:
                items.append(id=f"id{i:03d}", uri=f"/data/{i}.jpg", sha256=f"{i:064x}", status="ok",
                             label=f"c{i % 3}", size=int(i), mtime_ns=int(i) * 7, meta='{"k":"v"}' if i == 5 else "")
            st.commit("synthetic-0000", attrs, items, ids, [f"{i:064x}" for i in part], X[part], {})
        st.refresh()
    return path


@pytest.mark.parametrize("collide", [False, True])
def test_positions_gather_and_records_match_the_item_table(tmp_path, monkeypatch, collide):
    import embedstore.store.stored as stored_mod

    if collide:  # every id hashes alike: found by comparing ids along the run of equal hashes
        monkeypatch.setattr(stored_mod, "hash", lambda s: 42, raising=False)
    with open_store(_store(tmp_path / "s.h5"), mode="a") as st:
        items = st.items()
        stored = st.stored_items()
        live = st.live_rows("synthetic-0000", stored)
    want = ["id049", "nope", "id000", "id017", "id017", ""]
    pos = stored.positions(want)
    ids = list(items["id"])
    assert pos.tolist() == [ids.index(i) if i in ids else -1 for i in want]
    got = stored.gather(pos)
    for c in ("uri", "label", "status", "meta", "size", "mtime_ns"):
        assert [got[c][k] for k in (0, 2, 3)] == [items[c][p] for p in pos[[0, 2, 3]]], c
    assert stored.sha256(pos[[3, 0, 2]]) == [items["sha256"][p] for p in pos[[3, 0, 2]]]
    assert stored.sha256(np.array([49, 0, 25])) == [items["sha256"][p] for p in (49, 0, 25)]  # far apart
    recs = stored.records(pos[[3, 0, 3]])
    assert [r["id"] for r in recs] == ["id017", "id049", "id017"] and recs[1]["uri"] == "/data/49.jpg"
    assert live.all() and len(live) == 50


def test_an_edited_item_table_is_refused(tmp_path):
    path = _store(tmp_path / "s.h5")
    with h5py.File(path, "r+") as f:
        f["items/uri"][3] = "/elsewhere.jpg"
    with open_store(path) as st:
        with pytest.raises(StoreError, match="does not match its checksum"):
            st.stored_items()
