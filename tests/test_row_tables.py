"""Each vector set's row tables in the catalog (schema 2): `item_row` (row -> item), `row_sha256`
(per-block checksums of the row-aligned columns) and `row_map_sha256` (the virtual dataset's
row-to-shard map); and its row text (schema 4), the row columns as bytes read without a Python
object per value. Readers check what they read (the map on open, each block as it streams);
`embed verify` recomputes all of them from the shards. And export streams through them without
loading the item table."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from conftest import copy_store, embed, make_image_folder
from embedstore.errors import DamagedStoreError, StoreError
from embedstore.store import open_store
from embedstore.store.integrity import ROW_COLUMNS, row_map_digest, vds_row_map


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from embedstore.ingest import build

    root = tmp_path_factory.mktemp("rows")
    src = make_image_folder(root / "photos")  # 12 images in 3 shards of 4
    build(src, root / "s.h5", encoder="test:tiny", workers=0, precision="fp32", progress=False, batch_size=4, shard_rows=4)
    return root / "s.h5"


def _last_line(r) -> str:
    return r.output.strip().splitlines()[-1]


def _set(f):
    (name,) = list(f["vectors"])
    return f["vectors"][name]


def _rewrite_map(store, swap_sources: bool, fix_checksum: bool):
    """Point the first two pieces of the set's virtual dataset at each other's shard rows."""
    with h5py.File(store, "r+") as f:
        g = _set(f)
        pieces = vds_row_map(g["vectors"])
        assert len(pieces) == 3 and pieces[0][1] - pieces[0][0] == pieces[1][1] - pieces[1][0]
        if swap_sources:
            (a0, a1, fa, da, sa0, sa1), (b0, b1, fb, db, sb0, sb1) = pieces[:2]
            pieces[:2] = [(a0, a1, fb, db, sb0, sb1), (b0, b1, fa, da, sa0, sa1)]
        shape, dtype = g["vectors"].shape, g["vectors"].dtype
        vl = h5py.VirtualLayout(shape=shape, dtype=dtype)
        for v0, v1, fname, dset, s0, s1 in pieces:
            with h5py.File(store.parent / fname, "r") as sf:
                src_shape = sf[dset].shape
            vl[v0:v1] = h5py.VirtualSource(fname, dset, shape=src_shape)[s0:s1]
        del g["vectors"]
        g.create_virtual_dataset("vectors", vl, fillvalue=np.nan)
        if fix_checksum:
            g.attrs["row_map_sha256"] = row_map_digest(vds_row_map(g["vectors"]))


def _verify(store):
    r = embed("verify", store, "--json")
    return r.exit_code, json.loads(r.stdout)


def test_catalog_records_the_row_tables(built):
    with h5py.File(built, "r") as f:
        g = _set(f)
        ids, at = g["ids"].asstr()[()], g["item_row"][()]
        item_ids = f["items/id"].asstr()[()]
        assert list(item_ids[at]) == list(ids)  # row i describes item item_row[i]
        assert g["row_sha256"].shape == (1, len(ROW_COLUMNS) + 1)  # a checksum per row column, then item_row
        assert g.attrs["row_map_sha256"] == row_map_digest(vds_row_map(g["vectors"]))
    assert _verify(built)[0] == 0


def test_a_remapped_row_to_shard_map_is_refused_by_readers_and_verify(built, tmp_path):
    store = copy_store(built, tmp_path / "c.h5")
    with open_store(store, mode="a") as st:  # the copy's catalog points at the old name: rebuild it
        st.refresh(index=False)
    with open_store(store) as st:
        truth = st.rows(st.select_set().name).load()
    _rewrite_map(store, swap_sources=True, fix_checksum=False)
    with open_store(store) as st:
        name = st.select_set().name
        for read in (lambda: st.rows(name), lambda: list(st.iter_vectors(name))):  # refused on open, before any row
            with pytest.raises(DamagedStoreError, match="row-to-shard map does not match its checksum") as e:
                read()
            assert "\n" not in str(e.value) and "embed verify" in str(e.value)
    code, d = _verify(store)
    assert code == 1 and any("row-to-shard map" in p["problem"] for p in d["problems"])
    r = embed("export", store, "--out", tmp_path / "x")
    assert r.exit_code != 0 and "row-to-shard map" in _last_line(r) and not (tmp_path / "x").exists()
    # verify --repair rebuilds the catalog from the shards: the rows read are the right ones again
    assert embed("verify", store, "--repair").exit_code == 0
    with open_store(store) as st:
        assert np.array_equal(st.rows(st.select_set().name).load(), truth)


def test_a_remap_with_a_matching_checksum_is_still_found_by_verify(built, tmp_path):
    """The open-time check compares the map with its recorded checksum; verify compares it with the shards."""
    store = copy_store(built, tmp_path / "c.h5")
    with open_store(store, mode="a") as st:
        st.refresh(index=False)
    _rewrite_map(store, swap_sources=True, fix_checksum=True)
    code, d = _verify(store)
    assert code == 1 and [p["problem"] for p in d["problems"]] == [
        f"vector set {_name(store)}: its row-to-shard map differs from what the shards hold"]


def test_an_unchanged_rewrite_of_the_map_passes(built, tmp_path):
    """The check compares the mapping, not the bytes of the file: rewriting the same map is no damage."""
    store = copy_store(built, tmp_path / "c.h5")
    with open_store(store, mode="a") as st:
        st.refresh(index=False)
    _rewrite_map(store, swap_sources=False, fix_checksum=False)
    assert _verify(store)[0] == 0
    with open_store(store) as st:
        assert st.rows(st.select_set().name).load().shape[0] == 12


def _name(store):
    with h5py.File(store, "r") as f:
        return list(f["vectors"])[0]


@pytest.mark.parametrize("what", ["row text", "row text bounds", "row text start", "row text scalar", "item table", "item_row"])
def test_tampered_row_metadata_is_refused_as_it_streams(built, tmp_path, what):
    """Readers stream each set's labels from its row text (schema 4), checked block by block; the
    item table has its own checksum; `verify` compares every one of them with the shards."""
    store = copy_store(built, tmp_path / "c.h5")
    with open_store(store, mode="a") as st:
        st.refresh(index=False)
    with h5py.File(store, "r+") as f:
        g = _set(f)
        if what == "row text":  # one byte of one label changed (its checksum left as it was)
            data = g["row_text/label"]
            k = int(np.flatnonzero(data[()] == ord("a"))[0])
            data[k] = ord("o")
        elif what == "row text bounds":  # the block table points past the stored bytes
            g["row_text/block_start"][-1, ROW_COLUMNS.index("label")] += 3
        elif what == "row text start":  # junk before the first block, the table shifted past it
            data = g["row_text/label"][()]
            del g["row_text/label"]
            g.create_dataset("row_text/label", data=np.concatenate([np.frombuffer(b"xyz", np.uint8), data]))
            g["row_text/block_start"][:, ROW_COLUMNS.index("label")] += 3
        elif what == "row text scalar":  # a column replaced by something that is not bytes
            del g["row_text/label"]
            g.create_dataset("row_text/label", data=7)
        elif what == "item table":  # one label changed in the item table (its own checksums left as they were)
            f["items/label"][5] = "forged"  # not its old value: the labels are cat and dog
        else:  # two rows pointed at each other's items
            at = g["item_row"]
            at[3], at[4] = at[4], at[3]
    streamed = what.startswith("row text")
    with open_store(store) as st:
        rows = st.rows(st.select_set().name)
        if streamed:
            why = {"row text": "its label column in block 0 does not match its checksum",
                   "row text bounds": "its label text in block 0 lies outside the stored bytes",
                   "row text start": "its row text block table does not start at 0 and rise",
                   "row text scalar": "its row text has a column that is not bytes"}[what]
            with pytest.raises(DamagedStoreError, match=why) as e:
                rows.labels
            assert "\n" not in str(e.value) and f"embed verify {store} --repair" in str(e.value)
        elif what == "item table":
            with pytest.raises(StoreError, match="item table does not match its checksum"):
                st.items()
    code, d = _verify(store)
    assert code == 1
    if streamed:
        r = embed("export", store, "--out", tmp_path / "x")
        assert r.exit_code != 0 and _last_line(r).startswith("error:") and why in _last_line(r)
        assert not (tmp_path / "x").exists()
    assert embed("verify", store, "--repair").exit_code == 0
    with open_store(store) as st:
        assert set(st.rows(st.select_set().name).labels) == {"cat", "dog"}


def test_export_streams_without_loading_the_item_table(built, tmp_path, monkeypatch):
    from embedstore.exchange.export import export
    from embedstore.store.rows import SetRows
    from embedstore.store.store import Store

    with open_store(built) as st:
        rows = st.rows(st.select_set().name)
        ids, labels = list(rows.ids), list(rows.labels)
        X = np.concatenate([b for _, b in rows.slabs()]).astype(np.float32)  # as stored: what an export writes

    def refuse(*a, **k):
        raise AssertionError("export loaded a whole table")

    monkeypatch.setattr(Store, "items", refuse)
    monkeypatch.setattr(SetRows, "_columns", refuse)
    rep = export(built, tmp_path / "x", part_rows=5, progress=False)
    assert rep.rows == 12 and rep.parts == 3
    import pyarrow.parquet as pq

    got = np.concatenate([np.load(tmp_path / "x" / "emb" / f"part-0000{k}.npy") for k in range(3)])
    meta = [pq.read_table(tmp_path / "x" / "metadata" / f"part-0000{k}.parquet").to_pydict() for k in range(3)]
    assert np.array_equal(got.astype(np.float32), X)
    assert sum((m["id"] for m in meta), []) == ids and sum((m["label"] for m in meta), []) == labels


def test_items_at_reads_scattered_positions_in_windows(tmp_path):
    """Rows whose items are spread over a large table are read window by window, in the rows' order."""
    from embedstore.store import rows as rows_mod

    n = 300_000
    vals = np.array([f"v{i}" for i in range(n)], dtype=object)
    with h5py.File(tmp_path / "t.h5", "w") as f:
        f.create_dataset("label", data=vals, dtype=h5py.string_dtype("utf-8"))
    at = np.random.default_rng(0).choice(n, 20_000, replace=False)
    assert at.max() - at.min() > 4 * len(at) + rows_mod._WINDOW  # the windowed path, not one span
    with h5py.File(tmp_path / "t.h5", "r") as f:
        got = rows_mod._items_at(f, at, ["label", "text"])
    assert [b.decode() for b in got["label"]] == list(vals[at])
    assert set(got["text"]) == {b""}  # a column the table lacks reads as empty strings


def test_a_missing_shard_is_named_in_one_line(built, tmp_path):
    store = copy_store(built, tmp_path / "c.h5")
    with open_store(store, mode="a") as st:
        st.refresh(index=False)
    with open_store(store) as st:
        rows = st.rows(st.select_set().name)
    shard = sorted((tmp_path / "c.h5.d" / "shards").glob("*/*.h5"))[1]
    shard.unlink()
    with pytest.raises(StoreError, match=f"cannot read .* from shard {shard.name}.*missing or damaged") as e:
        rows.load()
    assert "\n" not in str(e.value)


def test_rows_stay_one_snapshot_while_a_build_commits(tmp_path, build_tiny):
    """Columns load on first use: they, and the vectors, come from the catalog `rows` was made from."""
    src = make_image_folder(tmp_path / "photos")
    store = tmp_path / "s.h5"
    build_tiny(src, store)
    with open_store(store) as st:
        rows = st.rows(st.select_set().name)
        before = st.rows(st.select_set().name).load()
    make_image_folder(tmp_path / "photos", classes=("owl",), per_class=4)
    build_tiny(src, store)  # commits 4 more rows and replaces the catalog
    assert len(rows) == 12 and len(rows.ids) == 12 and "owl" not in set(rows.labels)
    assert np.array_equal(rows.load(), before)
    with open_store(store) as st:
        now = st.rows(st.select_set().name)
        assert len(now) == 16 and sum(lab == "owl" for lab in now.labels) == 4
