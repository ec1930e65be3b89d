"""Numbered schema migrations: a store written in the previous schema (1) is read as it is by
readers and upgraded by the first writer, with nothing lost; a newer schema is refused in one line
and never rewritten."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from conftest import copy_store, embed, make_image_folder
from embedstore.errors import StoreError
from embedstore.store import SCHEMA_VERSION, open_store

# What a schema 1 catalog holds (written by embedstore before the row tables): per set only these.
SCHEMA1_SET_KEYS = {"ids", "vectors"}
SCHEMA2_ADDED_ATTRS = ("row_block", "row_map_sha256")


def write_schema1_store(src, store):
    """A store in the previous schema: built now, then its catalog written back as schema 1 wrote
    it (the same file less each set's row tables, and the schema attribute 1)."""
    from embedstore.ingest import build

    build(src, store, encoder="test:tiny", workers=0, precision="fp32", progress=False, batch_size=4, shard_rows=4)
    with h5py.File(store, "r+") as f:
        f.attrs["embedstore_schema"] = 1
        for g in f["vectors"].values():
            for k in ("item_row", "row_sha256"):
                del g[k]
            for k in SCHEMA2_ADDED_ATTRS:
                del g.attrs[k]
    with h5py.File(store, "r") as f:  # the fixture is what it claims to be
        assert all(set(g) == SCHEMA1_SET_KEYS and not set(SCHEMA2_ADDED_ATTRS) & set(g.attrs) for g in f["vectors"].values())
    return store


def _content(store):
    """Everything a user reads from a store: items, each row's id, label, split, uri and vector, the index."""
    with open_store(store) as st:
        name = st.select_set().name
        rows = st.rows(name)
        items = {k: list(v) for k, v in st.items().items()}
        index, meta = st.index(name)
        return {"items": items, "ids": list(rows.ids), "labels": list(rows.labels), "splits": list(rows.splits),
                "uris": list(rows.uris), "shas": list(rows.shas), "X": rows.load(), "ntotal": index.ntotal,
                "index_ids": meta.get("ids_sha256")}


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert (np.array_equal(a[k], b[k]) if k == "X" else a[k] == b[k]), k


@pytest.fixture(scope="module")
def fixture_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("mig")
    src = make_image_folder(root / "photos", classes=("cat", "dog", "owl"), per_class=5)
    from embedstore.ingest import build

    build(src, root / "now.h5", encoder="test:tiny", workers=0, precision="fp32", progress=False, batch_size=4, shard_rows=4)
    return write_schema1_store(src, root / "old.h5"), _content(root / "now.h5")


def _schema(store) -> int:
    with h5py.File(store, "r") as f:
        return int(f.attrs["embedstore_schema"])


def test_a_reader_reads_schema_1_as_it_is(fixture_store, tmp_path):
    store, want = fixture_store  # read in place: a copy under another name would be stale, and rebuilt
    before = store.read_bytes()
    assert _schema(store) == 1
    got = _content(store)
    _same(got, want)
    assert store.read_bytes() == before  # readers never migrate
    r = embed("verify", store, "--json")
    assert r.exit_code == 0 and any("schema 1" in n and "upgrades it" in n for n in json.loads(r.stdout)["notes"])


def test_the_first_writer_upgrades_with_nothing_lost(fixture_store, tmp_path):
    src, want = fixture_store
    store = copy_store(src, tmp_path / "w.h5")
    with h5py.File(store, "r+") as f:
        f.attrs["shard_dir"] = "w.h5.d/shards"
    with open_store(store, mode="a") as st:
        notes = list(st.notes)
    assert _schema(store) == SCHEMA_VERSION == 2
    assert notes == ["upgraded the catalog w.h5 from schema 1 to 2 (15 items, 15 rows; nothing lost)"]
    with h5py.File(store, "r") as f:
        assert all({"item_row", "row_sha256"} <= set(g) for g in f["vectors"].values())
    _same(_content(store), want)
    assert embed("verify", store).exit_code == 0
    with open_store(store, mode="a") as st:  # once upgraded, a writer has nothing to do
        assert st.notes == []


def test_a_build_on_a_schema_1_store_upgrades_it_and_adds_rows(fixture_store, tmp_path):
    src, want = fixture_store
    store = copy_store(src, tmp_path / "b.h5")
    with h5py.File(store, "r+") as f:
        f.attrs["shard_dir"] = "b.h5.d/shards"
    photos = src.parent / "photos"
    r = embed("build", photos, "--store", store, "--encoder", "test:tiny", "--precision", "fp32", "--workers", 0, "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["encoded"] == 0 and any("schema 1 to 2" in n for n in rep["notes"])  # nothing re-embedded
    assert _schema(store) == 2
    _same(_content(store), want)


@pytest.mark.parametrize("mode", ["r", "a"])
def test_a_newer_schema_is_refused_in_one_line_and_never_rewritten(fixture_store, tmp_path, mode):
    src, _ = fixture_store
    store = copy_store(src, tmp_path / "n.h5")
    with h5py.File(store, "r+") as f:
        f.attrs["embedstore_schema"] = SCHEMA_VERSION + 1
        f.attrs["shard_dir"] = "n.h5.d/shards"
    before = store.read_bytes()
    with pytest.raises(StoreError) as e:
        open_store(store, mode=mode)
    msg = str(e.value)
    assert "\n" not in msg and f"store schema {SCHEMA_VERSION + 1}, newer than this embedstore reads" in msg
    assert msg.endswith("upgrade embedstore")
    assert store.read_bytes() == before  # not "repaired" into an older schema
    r = embed("info", store)
    assert r.exit_code == 2 and "upgrade embedstore" in r.output


def test_migrations_are_numbered_and_chain_to_the_current_schema():
    from embedstore.store.migrations import MIGRATIONS

    names = [m.__name__.rsplit(".", 1)[-1] for m in MIGRATIONS]
    assert names == [f"m{k + 1:03d}_{n.split('_', 1)[1]}" for k, n in enumerate(names)]
    assert [m.FROM for m in MIGRATIONS] == list(range(1, SCHEMA_VERSION)) and [m.TO for m in MIGRATIONS] == list(range(2, SCHEMA_VERSION + 1))
