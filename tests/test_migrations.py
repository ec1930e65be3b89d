"""Numbered schema migrations: a store written in an earlier schema (1: no row tables; 2: no item
metadata; 3: no row text) is read as it is by readers and upgraded by the first writer, with nothing lost; a newer
schema is refused in one line and never rewritten."""

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

    write_schema2_store(src, store)
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


def write_schema2_store(src, store, **build_kw):
    """A store in schema 2: built now, then its catalog written back as schema 2 wrote it (no item
    `meta` column, row checksums without its column) and its shards as schema 2 wrote them (no
    `meta` item column; their checksums did not cover it)."""
    from embedstore.ingest import build

    build(src, store, **{"encoder": "test:tiny", "workers": 0, "precision": "fp32", "progress": False, "batch_size": 4,
                         "shard_rows": 4, **build_kw})
    with open_store(store, mode="a") as st:  # written whole, as every catalog was before appending (store/segments.py)
        st.refresh(index=False)
    with h5py.File(store, "r+") as f:
        f.attrs["embedstore_schema"] = 2
        assert not any(f["items/meta"].asstr()[()])  # nothing is lost by dropping it
        del f["items/meta"]
        for g in f["vectors"].values():
            del g["row_text"]
            d = g["row_sha256"][()]
            del g["row_sha256"]
            g.create_dataset("row_sha256", data=np.concatenate([d[:, :6], d[:, 7:]], axis=1))  # less meta's column
    for shard in (store.parent / (store.name + ".d") / "shards").glob("*/*.h5"):
        with h5py.File(shard, "r+") as f:
            del f["items/meta"]
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
    assert _schema(store) == SCHEMA_VERSION == 4
    assert notes == ["upgraded the catalog w.h5 from schema 1 to 4 (15 items, 15 rows; nothing lost)"]
    with h5py.File(store, "r") as f:
        assert all({"item_row", "row_sha256", "row_text"} <= set(g) for g in f["vectors"].values())
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
    rep = json.loads(r.stdout)
    assert rep["encoded"] == 0 and any("schema 1 to 4" in n for n in rep["notes"])  # nothing re-embedded
    assert _schema(store) == 4
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


def test_a_schema_2_store_is_read_verified_and_upgraded_and_a_rebuild_fills_in_metadata(tmp_path):
    """Schema 2 predates item metadata: read as it is (items without metadata, shards' checksums
    intact), upgraded by the first writer, and a build from a manifest with more columns adds them
    to the same items without re-encoding any."""
    import csv

    photos = make_image_folder(tmp_path / "photos", classes=("cat", "dog"), per_class=4)
    files = sorted(p.relative_to(photos) for p in photos.rglob("*.*"))
    manifest = tmp_path / "m.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])
        w.writerows([[f"photos/{p}", p.parts[0]] for p in files])
    store = write_schema2_store(manifest, tmp_path / "s.h5")
    want = _content(store)
    before = store.read_bytes()
    assert _schema(store) == 2
    r = embed("verify", store, "--json")
    assert r.exit_code == 0, r.output
    assert any("schema 2" in n and "upgrades it" in n for n in json.loads(r.stdout)["notes"])
    with open_store(store) as st:
        assert set(st.rows(st.select_set().name).metas) == {""}
    assert store.read_bytes() == before  # readers never migrate
    with open(manifest, "w", newline="") as f:  # the same files, now with a metadata column
        w = csv.writer(f)
        w.writerow(["path", "label", "brand"])
        w.writerows([[f"photos/{p}", p.parts[0], "acme" if k % 2 else "zenith"] for k, p in enumerate(files)])
    r = embed("build", manifest, "--store", store, "--encoder", "test:tiny", "--precision", "fp32", "--workers", 0, "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert any("schema 2 to 4" in n for n in rep["notes"]) and rep["encoded"] == 0 and rep["metadata_updated"] == len(files)
    assert _schema(store) == 4
    got = _content(store)
    for k in want:
        if k != "items":
            assert (np.array_equal(got[k], want[k]) if k == "X" else got[k] == want[k]), k
    r = embed("ls", store, "--where", "brand=acme", "--json")
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.stdout)) == len(files) // 2
    assert embed("verify", store).exit_code == 0


def test_a_schema_3_store_is_read_through_its_item_table_and_upgraded_with_row_text(tmp_path):
    """Schema 3 predates the row text: readers stream its rows through the item table (the same
    values, checked by the same checksums), `verify` passes with a note, and the first writer adds
    the row text with nothing re-encoded."""
    from embedstore.exchange.export import export

    photos = make_image_folder(tmp_path / "photos", classes=("cat", "dog", "owl"), per_class=5)
    now = tmp_path / "now.h5"
    from embedstore.ingest import build

    store = tmp_path / "s3.h5"
    for path in (now, store):
        build(photos, path, encoder="test:tiny", workers=0, precision="fp32", progress=False, batch_size=4, shard_rows=4)
    with h5py.File(store, "r+") as f:
        f.attrs["embedstore_schema"] = 3
        for g in f["vectors"].values():
            del g["row_text"]
    before = store.read_bytes()
    _same(_content(store), _content(now))
    ex3, ex4 = export(store, tmp_path / "x3", progress=False), export(now, tmp_path / "x4", progress=False)
    assert ex3.rows == ex4.rows == 15
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "x3" / "metadata").equals(pq.read_table(tmp_path / "x4" / "metadata"))
    r = embed("verify", store, "--json")
    assert r.exit_code == 0 and any("schema 3" in n and "upgrades it" in n for n in json.loads(r.stdout)["notes"])
    assert store.read_bytes() == before  # readers never migrate
    r = embed("build", photos, "--store", store, "--encoder", "test:tiny", "--precision", "fp32", "--workers", 0, "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["encoded"] == 0 and any("schema 3 to 4" in n and "nothing lost" in n for n in rep["notes"])
    assert _schema(store) == 4
    with h5py.File(store, "r") as f:
        assert all("row_text" in g for g in f["vectors"].values())
    _same(_content(store), _content(now))
    assert embed("verify", store).exit_code == 0


def test_a_schema_4_catalog_without_its_row_text_is_damage_not_an_older_schema(tmp_path):
    photos = make_image_folder(tmp_path / "photos", classes=("cat", "dog"), per_class=3)
    from embedstore.ingest import build

    store = tmp_path / "s.h5"
    build(photos, store, encoder="test:tiny", workers=0, precision="fp32", progress=False, batch_size=4)
    with h5py.File(store, "r+") as f:
        for g in f["vectors"].values():
            del g["row_text"]
    r = embed("export", store, "--out", tmp_path / "x")
    assert r.exit_code != 0 and "has no row text" in r.output and f"embed verify {store} --repair" in r.output
    assert not (tmp_path / "x").exists()
    assert embed("verify", store).exit_code == 1
    assert embed("verify", store, "--repair").exit_code == 0
    assert embed("export", store, "--out", tmp_path / "x").exit_code == 0
