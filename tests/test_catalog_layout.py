"""The catalog's merge of shards (`compute_layout`): the array path taken when no id repeats gives
exactly the Layout of the general merge, on seeded random shards with quarantined items, stale
vectors, vectors without an item row and several vector sets; a repeated id takes the general path."""

from __future__ import annotations

import numpy as np
import pytest

from embedstore.store.catalog import _layout_general, _layout_unique, compute_layout
from embedstore.store.schema import ITEM_COLUMNS, ITEM_INT_COLUMNS
from embedstore.store.shards import ShardMeta

SETS = {"a-1": {"dim": 4, "dtype": "float16"}, "b-2": {"dim": 8, "dtype": "float32"}}


def random_shards(seed: int, repeat_id: bool = False):
    rng = np.random.default_rng(seed)
    out, k = [], 0
    for s in range(int(rng.integers(1, 7))):
        set_name = ("a-1", "b-2")[int(rng.integers(0, 2))]
        n = int(rng.integers(0, 9))
        ids = [f"i{k + t}" for t in range(n)]
        k += n
        if repeat_id and s == 1 and out:
            ids[:1] = [out[0][1].items["id"][0]] if len(out[0][1].items["id"]) else ids[:1]
        status = np.where(rng.random(n) < 0.2, "quarantined", "ok")
        sha = [f"h{t}" for t in range(n)]
        items = {c: np.array(ids if c == "id" else sha if c == "sha256" else status if c == "status" else [""] * n, dtype=object)
                 for c in ITEM_COLUMNS if c not in ITEM_INT_COLUMNS}
        items.update({c: np.arange(n, dtype=np.int64) for c in ITEM_INT_COLUMNS})
        with_vec = [t for t in range(n) if status[t] == "ok" and rng.random() < 0.9]
        vids = [ids[t] for t in with_vec] + ([f"orphan{s}"] if rng.random() < 0.3 else [])  # a vector with no item row
        vsha = [sha[ids.index(v)] if v in ids and rng.random() < 0.85 else "stale" for v in vids]
        out.append((set_name, ShardMeta(name=f"{s:020d}-1-{s:06d}.h5", items=items, vector_ids=np.array(vids, dtype=object),
                                        vector_sha256=np.array(vsha, dtype=object), n_vectors=len(vids),
                                        dim=SETS[set_name]["dim"])))
    return out


def _plain(layout):
    """A layout as plain Python values (its columns may be object arrays, lists or Arrow arrays)."""
    from embedstore.store.columns import values

    return ({c: [v.item() if hasattr(v, "item") else v for v in values(layout.items[c])] for c in ITEM_COLUMNS},
            {k: (sl.runs, list(values(sl.ids)), [int(x) for x in sl.item_rows], sl.stale, sl.dim, sl.dtype) for k, sl in layout.sets.items()},
            layout.shards, list(layout.sets))


def compact(shards):
    """The same shards as the catalog refresh keeps them (`read_shard_meta(compact=True)`): string columns in Arrow."""
    from dataclasses import replace

    from embedstore.store.columns import arrow

    from embedstore.store.shards import _shared

    out = []
    for s, m in shards:
        items = {c: v if c in ITEM_INT_COLUMNS else arrow(v) for c, v in m.items.items()}
        out.append((s, replace(m, items=items, vector_ids=_shared(arrow(m.vector_ids), items["id"]),
                               vector_sha256=_shared(arrow(m.vector_sha256), items["sha256"]))))
    return out


@pytest.mark.parametrize("seed", range(40))
def test_the_array_path_gives_the_general_layout(seed):
    order = sorted(random_shards(seed), key=lambda s: s[1].name)
    fast = _layout_unique(order, SETS)
    assert fast is not None
    want = _plain(_layout_general(order, SETS))
    assert _plain(fast) == want
    # and from the compact (Arrow) columns the refresh keeps, by either path
    assert _plain(_layout_unique(compact(order), SETS)) == want == _plain(_layout_general(compact(order), SETS))


def test_the_compact_shards_share_their_columns_where_the_refresh_would():
    """Some random shards have a vector for each item in order (the shared fast path), others not."""
    shared = [m.vector_ids is m.items["id"] for seed in range(40) for _, m in compact(random_shards(seed))]
    assert 0 < sum(shared) < len(shared)


def test_the_random_shards_cover_every_case():
    """Across the seeds: stale vectors, orphan vectors, quarantined items, two sets, several runs in a set."""
    layouts = [_layout_general(sorted(random_shards(s), key=lambda x: x[1].name), SETS) for s in range(40)]
    assert sum(sl.stale for lay in layouts for sl in lay.sets.values()) > 20
    assert any(len(lay.sets) == 2 for lay in layouts)
    assert any(len(sl.runs) >= 3 for lay in layouts for sl in lay.sets.values())
    assert any("quarantined" in list(lay.items["status"]) for lay in layouts)


def test_a_repeated_id_takes_the_general_path():
    shards = random_shards(3, repeat_id=True)
    order = sorted(shards, key=lambda s: s[1].name)
    ids = [i for _, m in order for i in m.items["id"]]
    assert len(set(ids)) < len(ids)
    assert _layout_unique(order, SETS) is None and _layout_unique(compact(order), SETS) is None
    assert _plain(compute_layout(shards, SETS)) == _plain(_layout_general(order, SETS)) == _plain(compute_layout(compact(shards), SETS))


def test_vectors_without_any_item_take_the_general_path():
    """An item table with no rows but a shard holding vectors (not written by embedstore, but a
    layout must not crash on it): the general merge, which counts them stale."""
    items = {c: np.zeros(0, dtype=np.int64) if c in ITEM_INT_COLUMNS else np.zeros(0, dtype=object) for c in ITEM_COLUMNS}
    meta = ShardMeta(name=f"{0:020d}-1-{0:06d}.h5", items=items, vector_ids=np.array(["x"], dtype=object),
                     vector_sha256=np.array(["h"], dtype=object), n_vectors=1, dim=4)
    for shards in ([("a-1", meta)], compact([("a-1", meta)])):
        assert _layout_unique(shards, SETS) is None
        lay = compute_layout(shards, SETS)
        assert lay.sets["a-1"].stale == 1 and len(lay.sets["a-1"].ids) == 0
