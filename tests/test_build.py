import json
import os
import time

import h5py
import numpy as np
import pytest

from embedstore.errors import ProvenanceMismatchError, StoreError
from embedstore.store import open_store, sidecar_dir

from conftest import add_bad_files, embed, make_image_folder, write_image


def read_set(store_path):
    """Read ids and vectors with plain h5py, as someone without embedstore would."""
    with h5py.File(store_path, "r") as f:
        (name,) = list(f["vectors"])
        g = f["vectors"][name]
        return list(g["ids"].asstr()[()]), g["vectors"][()].astype(np.float32), dict(g.attrs)


def test_build_then_info(image_folder, tmp_path, build_tiny):
    store = tmp_path / "s.h5"
    r = build_tiny(image_folder, store)
    assert (r.encoded, r.quarantined, r.items_in_source) == (12, 0, 12)
    ids, vecs, attrs = read_set(store)
    assert sorted(ids) == sorted(f"{c}/{c}_{i:03d}{'.jpg' if i % 2 == 0 else '.png'}" for c in ("cat", "dog") for i in range(6))
    assert vecs.shape == (12, 32) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=2e-3)
    assert attrs["encoder"] == "test:tiny" and attrs["dtype"] == "float16" and attrs["normalize"] == "l2"
    for key in ("weights_sha256", "preprocess", "layer", "pooling", "created", "library_versions", "schema_version"):
        assert key in attrs
    with h5py.File(store, "r") as f:
        assert f["vectors"][attrs["key"] and list(f["vectors"])[0]]["vectors"].dtype == np.float16
    info = open_store(store).info()
    assert info["labels"] == {"cat": 6, "dog": 6} and info["ok"] == 12
    (vs,) = info["vector_sets"]
    assert vs["index"]["ntotal"] == 12 and vs["index"]["up_to_date"] and vs["index"]["recall_at_10"] == 1.0


def test_index_search_finds_item_itself(image_folder, tmp_path, build_tiny):
    import faiss

    store = tmp_path / "s.h5"
    build_tiny(image_folder, store)
    ids, vecs, attrs = read_set(store)
    index = faiss.read_index(str(sidecar_dir(store) / "index" / f"{list(open_store(store).vector_sets())[0].name}.faiss"))
    _, nn = index.search(vecs, 3)
    assert (nn[:, 0] == np.arange(len(ids))).all()
    labels = [i.split("/")[0] for i in ids]
    assert np.mean([labels[nn[k, 1]] == labels[k] for k in range(len(ids))]) >= 0.9  # colours separate classes


def test_rerun_encodes_nothing_and_adds_only_new_files(image_folder, tmp_path, build_tiny):
    store = tmp_path / "s.h5"
    build_tiny(image_folder, store)
    ids0, vecs0, _ = read_set(store)
    again = build_tiny(image_folder, store)
    assert (again.encoded, again.unchanged) == (0, 12)
    write_image(image_folder / "owl" / "owl_new.jpg", (50, 60, 200), seed=7)
    write_image(image_folder / "cat" / "cat_new.png", (200, 60, 40), seed=8)
    more = build_tiny(image_folder, store)
    assert (more.encoded, more.unchanged) == (2, 12)
    ids1, vecs1, _ = read_set(store)
    assert len(ids1) == len(set(ids1)) == 14
    pos = {i: k for k, i in enumerate(ids1)}
    assert np.array_equal(vecs1[[pos[i] for i in ids0]], vecs0)
    meta = open_store(store).vector_sets()[0].index
    assert meta["ntotal"] == 14 and meta["added_rows"] == 2  # the index was extended, not rebuilt


def test_changed_file_is_reembedded_and_old_row_dropped(image_folder, tmp_path, build_tiny):
    store = tmp_path / "s.h5"
    build_tiny(image_folder, store)
    ids0, vecs0, _ = read_set(store)
    target = image_folder / "cat" / "cat_000.jpg"
    write_image(target, (10, 10, 10), seed=123)
    touched = image_folder / "dog" / "dog_000.jpg"
    os.utime(touched, ns=(time.time_ns(), time.time_ns() + 10**9))  # new mtime, same bytes
    r = build_tiny(image_folder, store)
    assert r.encoded == 1 and r.unchanged == 11
    ids1, vecs1, _ = read_set(store)
    assert len(ids1) == len(set(ids1)) == 12
    k0, k1 = ids0.index("cat/cat_000.jpg"), ids1.index("cat/cat_000.jpg")
    assert not np.allclose(vecs0[k0], vecs1[k1])
    assert open_store(store).vector_sets()[0].stale_rows == 1


def test_a_second_folder_with_the_same_ids_is_refused_and_a_moved_folder_is_the_same_items(image_folder, tmp_path, build_tiny):
    import shutil

    store = tmp_path / "s.h5"
    build_tiny(image_folder, store)
    ids0, vecs0, _ = read_set(store)
    other = make_image_folder(tmp_path / "other", classes=("cat", "dog"), per_class=6, seed=99)  # the same relative paths
    before = sorted(p.name for p in sidecar_dir(store).rglob("*"))
    r = embed("build", other, "--store", store, "--encoder", "test:tiny")
    assert r.exit_code == 2 and "already in the store from another file that still exists" in r.output, r.output
    assert "11 more id(s)" in r.output and "its own --store" in r.output
    assert sorted(p.name for p in sidecar_dir(store).rglob("*")) == before  # nothing written
    ids1, vecs1, _ = read_set(store)
    assert ids1 == ids0 and np.array_equal(vecs1, vecs0)
    # a folder that moved (its old files are gone) holds the same items: nothing is encoded again
    moved = shutil.move(str(image_folder), str(tmp_path / "moved"))
    again = build_tiny(moved, store)
    assert (again.encoded, again.unchanged) == (0, 12)


def test_files_gone_from_the_folder_are_said_and_stay(image_folder, tmp_path, build_tiny):
    store = tmp_path / "s.h5"
    build_tiny(image_folder, store)
    (image_folder / "cat" / "cat_001.png").unlink()
    (image_folder / "dog" / "dog_002.jpg").rename(image_folder / "cat" / "was_dog.jpg")  # relabelled by moving
    r = build_tiny(image_folder, store)
    assert (r.encoded, r.reused, r.unchanged) == (0, 1, 10)  # the moved file's vector is copied, not encoded
    note = [n for n in r.notes if "no longer exist" in n]
    assert len(note) == 1 and note[0].startswith("2 item(s) of the store came from files under") and "--exclude" in note[0]
    assert len(open_store(store).rows(open_store(store).select_set().name)) == 13  # they stay: said, not dropped
    again = build_tiny(image_folder, store)
    assert any(n.startswith("2 item(s)") for n in again.notes)
    # the note's list: `embed ls --status missing`, one id a line, which --exclude reads
    assert f"embed ls {store} --status missing > gone.txt" in note[0]  # the store as given, not its basename
    gone = embed("ls", store, "--status", "missing")
    assert gone.exit_code == 0 and gone.stdout.splitlines() == ["cat/cat_001.png", "dog/dog_002.jpg"]
    long = embed("ls", store, "--status", "missing", "-l").stdout.splitlines()
    assert len(long) == 2 and all("missing (its file no longer exists" in line for line in long), long
    (tmp_path / "gone.txt").write_text(gone.stdout)
    r = embed("fit-head", "logistic", "--store", store, "--json", "-q")  # fit-head says so too, with the fix
    (said,) = [n for n in json.loads(r.stdout)["notes"] if "have files that no longer exist" in n]
    assert said.startswith("2 of the 13 items in the head's splits have files that no longer exist, e.g. ")
    assert f"`embed ls {store} --status missing > gone.txt`, then fit again with --exclude gone.txt" in said
    r = embed("fit-head", "logistic", "--store", store, "--exclude", tmp_path / "gone.txt", "--json", "-q")
    assert r.exit_code == 0 and json.loads(r.stdout)["excluded"]["ids"] == 2, r.output
    assert not any("no longer exist" in n for n in json.loads(r.stdout)["notes"])


def test_bad_files_are_quarantined_and_build_goes_on(image_folder, tmp_path, build_tiny):
    expected = add_bad_files(image_folder)
    store = tmp_path / "s.h5"
    r = build_tiny(image_folder, store)
    assert r.encoded == 12 and r.quarantined == 4
    reasons = {q["id"]: q["reason"] for q in r.quarantined_items}
    assert set(reasons) == set(expected)
    for item_id, fragment in expected.items():
        assert fragment in reasons[item_id]
    info = open_store(store).info()
    assert info["quarantined"] == 4 and {q["id"] for q in info["quarantined_items"]} == set(expected)
    again = build_tiny(image_folder, store)
    assert (again.encoded, again.previously_quarantined) == (0, 4)


def test_manifest_label_change_updates_metadata_without_encoding(tmp_path, build_tiny):
    for i in range(4):
        write_image(tmp_path / "imgs" / f"{i}.jpg", seed=i)
    m = tmp_path / "m.csv"
    m.write_text("path,label,split\n" + "".join(f"imgs/{i}.jpg,a,train\n" for i in range(4)))
    store = tmp_path / "s.h5"
    build_tiny(m, store)
    m.write_text("path,label,split\n" + "".join(f"imgs/{i}.jpg,{'b' if i == 0 else 'a'},train\n" for i in range(4)))
    r = build_tiny(m, store)
    assert (r.encoded, r.metadata_updated, r.unchanged) == (0, 1, 3)
    items = open_store(store).items()
    assert dict(zip(items["id"], items["label"]))["imgs/0.jpg"] == "b"
    assert len(read_set(store)[0]) == 4


@pytest.mark.parametrize("variant", [dict(layer="1"), dict(dtype="float32"), dict(normalize="none")])
def test_other_provenance_makes_a_separate_set(image_folder, tmp_path, build_tiny, variant):
    store = tmp_path / "s.h5"
    build_tiny(image_folder, store)
    r = build_tiny(image_folder, store, **variant)
    assert r.encoded == 12
    st = open_store(store)
    sets = st.vector_sets()
    assert len(sets) == 2 and {s.count for s in sets} == {12}
    a, b = sets
    with pytest.raises(ProvenanceMismatchError, match="expected"):
        list(st.iter_vectors(a.name, expect=b.provenance))
    chunks = list(st.iter_vectors(a.name, chunk_rows=5, expect=a.provenance))
    assert [len(ids) for ids, _ in chunks] == [5, 5, 2]


def test_other_weights_make_a_separate_set(image_folder, tmp_path, build_tiny):
    import torch

    from embedstore.encoders.testing import tiny_cnn

    model = tiny_cnn()
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    torch.save(model.state_dict(), tmp_path / "w.pth")
    store = tmp_path / "s.h5"
    build_tiny(image_folder, store)
    build_tiny(image_folder, store, weights=str(tmp_path / "w.pth"))
    sets = open_store(store).vector_sets()
    assert len(sets) == 2 and len({s.provenance["weights_sha256"] for s in sets}) == 2


def test_plain_h5py_reads_vectors_from_another_directory(image_folder, tmp_path, build_tiny, monkeypatch):
    store = tmp_path / "s.h5"
    build_tiny(image_folder, store)
    monkeypatch.chdir("/")
    ids, vecs, _ = read_set(store)
    assert len(ids) == 12 and np.isfinite(vecs).all()


def test_missing_shard_is_reported_not_read_as_zeros(image_folder, tmp_path, build_tiny):
    store = tmp_path / "s.h5"
    build_tiny(image_folder, store)
    st = open_store(store)
    name = st.vector_sets()[0].name
    shard = sorted((sidecar_dir(store) / "shards" / name).iterdir())[0]
    moved = shard.with_suffix(".bak")
    shard.rename(moved)
    _, vecs, _ = read_set(store)  # the catalog still lists it: plain h5py sees NaN, not zeros
    assert np.isnan(vecs).any()
    with pytest.raises(StoreError, match="missing"):
        list(st.iter_vectors(name))


def test_summary_separates_fixed_cost_from_per_item_throughput(image_folder, tmp_path, monkeypatch):
    """Start-up (imports, model load, weights hash) and the index are reported apart from the loop,
    so the items/s of the loop says what more items cost. A planted 0.3 s in the encoder's
    construction must land in start-up (model load), not in the loop."""
    import json
    import time as _time

    from embedstore.embedding.service import EmbeddingService

    from conftest import embed

    real = EmbeddingService.create.__func__

    def slow_create(cls, *a, **kw):
        _time.sleep(0.3)
        return real(cls, *a, **kw)

    monkeypatch.setattr(EmbeddingService, "create", classmethod(slow_create))
    args = ("build", image_folder, "--store", tmp_path / "s.h5", "--encoder", "test:tiny", "--precision", "fp32",
            "--workers", "0", "-q")
    r = embed(*args, "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["encoded"] == 12
    assert rep["model_load_s"] >= 0.3 and rep["startup_s"] >= rep["model_load_s"]
    assert rep["startup_s"] + rep["loop_s"] + rep["finish_s"] <= rep["wall_s"] + 1e-6
    assert rep["loop_s"] <= rep["wall_s"] - 0.3  # the planted start-up is not in the loop
    assert rep["loop_items_per_s"] == pytest.approx(12 / rep["loop_s"])
    assert rep["items_per_s"] == pytest.approx(12 / rep["wall_s"]) and rep["loop_items_per_s"] > rep["items_per_s"]
    write_image(image_folder / "cat" / "cat_new.jpg", seed=5)
    r = embed(*args)
    assert r.exit_code == 0, r.output
    assert "1 new vector in set" in r.output and "fixed cost: start-up" in r.output and "index and catalog" in r.output
    assert "loop " in r.output and "items/s overall" in r.output


def test_a_build_that_adds_nothing_leaves_an_up_to_date_catalog_as_it_is(image_folder, tmp_path):
    """A second build over the same source commits nothing; the catalog is checked (shards listed,
    index intact and holding the catalog's ids) and not rewritten. Damage is still repaired: a
    deleted index is rebuilt, a truncated catalog is rebuilt from the shards."""
    import json

    store = tmp_path / "s.h5"
    args = ["build", image_folder, "--store", store, "--encoder", "test:tiny", "--workers", 0, "--batch-size", 4]
    assert embed(*args, "--quiet").exit_code == 0
    before = store.stat().st_mtime_ns
    r = embed(*args, "--json")
    assert r.exit_code == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["encoded"] == 0 and rep["catalog_rewritten"] is False and rep["vectors_in_set"] == 12
    assert rep["index"]["ntotal"] == 12 and store.stat().st_mtime_ns == before
    r = embed(*args)
    assert "already up to date, not rewritten" in r.stdout
    index = next((tmp_path / "s.h5.d" / "index").glob("*.faiss"))
    index.unlink()
    rep = json.loads(embed(*args, "--json").stdout)
    # the index rebuilt, and recorded in the catalog by appending (nothing to add: store/segments.py)
    assert rep["catalog_appended"] is True and index.exists() and rep["index"]["ntotal"] == 12
    assert embed("verify", store).exit_code == 0
    store.write_bytes(store.read_bytes()[:4096])  # truncated: rebuilt from the shards as the store opens
    rep = json.loads(embed(*args, "--json").stdout)
    assert rep["encoded"] == 0 and rep["vectors_in_set"] == 12 and any("catalog" in n and "rebuilt" in n for n in rep["notes"])
    assert embed("verify", store).exit_code == 0


def test_a_copied_manifest_with_new_labels_counts_them_as_updated(image_folder, tmp_path, build_tiny):
    """A manifest copied to another folder with its images, one label and one metadata value changed:
    the files are the stored bytes (nothing encoded), their rows are rewritten with the new values,
    and the summary counts those two as updated (it said "updated 0" and counted them unchanged)."""
    import shutil

    from embedstore.store import open_store

    rows = [(p.relative_to(image_folder).as_posix(), p.parent.name) for p in sorted(image_folder.rglob("*.*"))]
    (image_folder / "m.csv").write_text("path,label,brand\n" + "".join(f"{p},{lab},acme\n" for p, lab in rows))
    store = tmp_path / "s.h5"
    build_tiny(image_folder / "m.csv", store)
    shutil.copytree(image_folder, tmp_path / "copy")
    text = (tmp_path / "copy" / "m.csv").read_text().splitlines()
    first, second = text[1].split(","), text[2].split(",")
    text[1] = ",".join([first[0], "emu", first[2]])
    text[2] = ",".join([second[0], second[1], "zenith"])
    (tmp_path / "copy" / "m.csv").write_text("\n".join(text) + "\n")
    r = build_tiny(tmp_path / "copy" / "m.csv", store)
    assert (r.encoded, r.metadata_updated, r.unchanged, r.moved) == (0, 2, len(rows) - 2, len(rows))
    with open_store(store) as st:
        items = st.items()
        got = dict(zip(items["id"], zip(items["label"], items["meta"])))
    assert got[first[0]][0] == "emu" and "zenith" in got[second[0]][1]


def test_a_moved_folder_is_counted_and_its_deleted_files_are_still_said(image_folder, tmp_path, build_tiny):
    """After the photo folder moved, a rebuild said '0 new vectors ... labels/splits/metadata updated 0'
    and nothing about the items deleted before the move: the note looked only under the new folder.
    The summary counts the moved items and the note still counts the deleted ones."""
    import shutil

    store = tmp_path / "s.h5"
    build_tiny(image_folder, store)
    (image_folder / "cat" / "cat_001.png").unlink()
    shutil.move(image_folder, tmp_path / "moved")
    r = build_tiny(tmp_path / "moved", store)
    assert r.encoded == 0 and r.moved == 11 == r.unchanged
    (note,) = [n for n in r.notes if "no longer exist" in n]
    assert note.startswith(f"1 item(s) of the store came from files under {tmp_path / 'moved'} (or where its files were before")
    out = embed("build", tmp_path / "moved", "--store", store, "--encoder", "test:tiny", "-q").output
    assert "; moved " not in out  # a second run: nothing moved any more


def test_a_file_moved_to_another_folder_gets_its_stored_vector_without_encoding(image_folder, tmp_path, build_tiny):
    """Moving a mislabelled photo to its right class folder (or renaming it) gives it a new id: a
    rebuild decoded and encoded it again. Its bytes are those of an item whose file is gone, so its
    vector is copied: nothing is encoded, the vector is the stored one, and the CLI says so. With
    workers (the DataLoader path) as without."""
    import shutil

    store = tmp_path / "s.h5"
    build_tiny(image_folder, store)
    ids0, vecs0, _ = read_set(store)
    before = dict(zip(ids0, vecs0))
    shutil.move(image_folder / "cat" / "cat_002.jpg", image_folder / "dog" / "cat_002.jpg")
    shutil.move(image_folder / "dog" / "dog_003.png", image_folder / "dog" / "renamed.png")
    write_image(image_folder / "dog" / "fresh.png", (10, 200, 30))  # new bytes: encoded
    r = build_tiny(image_folder, store, workers=1)
    assert (r.encoded, r.reused, r.unchanged, r.quarantined) == (1, 2, 10, 0)
    (note,) = [n for n in r.notes if "no longer exist" in n]
    assert note.startswith("2 item(s)")  # the old ids stay in the store, as any gone item does
    ids, vecs, _ = read_set(store)
    after = dict(zip(ids, vecs))
    assert len(ids) == 15 and len(set(ids)) == 15
    np.testing.assert_array_equal(after["dog/cat_002.jpg"], before["cat/cat_002.jpg"])
    np.testing.assert_array_equal(after["dog/renamed.png"], before["dog/dog_003.png"])
    with open_store(store) as st:
        items = st.items()
        label = dict(zip(items["id"], items["label"]))
        assert label["dog/cat_002.jpg"] == "dog" and label["cat/cat_002.jpg"] == "cat"
        (vs,) = st.info()["vector_sets"]
        assert vs["index"]["ntotal"] == 15 and vs["index"]["up_to_date"]
    # the same through the CLI, on a fresh move: the summary counts it, and a rerun has nothing to do
    shutil.move(image_folder / "cat" / "cat_004.jpg", image_folder / "dog" / "cat_004.jpg")
    out = embed("build", image_folder, "--store", store, "--encoder", "test:tiny", "--precision", "fp32", "-q").output
    assert "0 new vectors" in out and "reused 1 (new ids with the bytes of items whose files are gone" in out
    out = embed("build", image_folder, "--store", store, "--encoder", "test:tiny", "--precision", "fp32", "-q").output
    assert "reused" not in out and "0 new vectors" in out


def test_a_set_without_vectors_does_not_fix_the_preprocessing_of_later_builds(tmp_path, build_tiny):
    """A first build of a folder holding only non-images made an empty vector set with the model's
    preprocessing; the next build, of small images, kept that preprocessing "because this store
    already holds this encoder's vectors made with it" although it held none, so the set differed
    from a fresh store's and heads did not carry over. An empty set binds nothing, and the empty
    build says that nothing was embedded."""
    src = tmp_path / "tx"
    src.mkdir()
    (src / "readme.txt").write_text("x")
    (src / "data.csv").write_text("a,b\n")
    r = build_tiny(src, tmp_path / "x.h5", encoder="effnet-lite:lite0")
    assert r.vectors_in_set == 0 and any(n.startswith("none of the source's files could be embedded (all 2") for n in r.notes)
    for i in range(4):
        write_image(src / f"img{i}.png", (20 * i, 90, 200))
    r = build_tiny(src, tmp_path / "x.h5", encoder="effnet-lite:lite0")
    fresh = build_tiny(src, tmp_path / "fresh.h5", encoder="effnet-lite:lite0")
    assert r.vectors_in_set == 4 and r.vector_set == fresh.vector_set  # the small-image preprocessing, as a fresh store
    assert not any("kept the model's preprocessing" in n for n in r.notes)


def test_the_pixel_limit_is_said_raised_by_a_setting_and_quarantined_files_can_be_read_again(image_folder, tmp_path,
                                                                                             build_tiny, monkeypatch):
    """Images over PIL's bomb limit (89.5 megapixels) were quarantined with PIL's wording, no way to
    raise it, and PIL's raw DecompressionBombWarning on stderr; and once quarantined a file stayed so
    until it changed. The reason names the limit and the setting; --retry-quarantined reads it again."""
    store = tmp_path / "s.h5"
    monkeypatch.setenv("EMBEDSTORE_MAX_IMAGE_PIXELS", "1000")  # the test images are 48 x 40 = 1,920 pixels
    r = build_tiny(image_folder, store)
    assert (r.encoded, r.quarantined) == (0, 12)
    assert r.quarantined_items[0]["reason"] == ("image too large (48x40 = 1,920 pixels, over the limit of 1,000; "
                                                "raise it with EMBEDSTORE_MAX_IMAGE_PIXELS=1920)")
    monkeypatch.setenv("EMBEDSTORE_MAX_IMAGE_PIXELS", "1920")
    r = build_tiny(image_folder, store)
    assert (r.encoded, r.previously_quarantined) == (0, 12)  # unchanged files: not read again unasked
    out = embed("build", image_folder, "--store", store, "--encoder", "test:tiny", "--precision", "fp32", "-q").output
    assert "12 still (files unchanged since an earlier build quarantined them; --retry-quarantined reads them again)" in out
    r = build_tiny(image_folder, store, retry_quarantined=True)
    assert (r.encoded, r.quarantined, r.vectors_in_set) == (12, 0, 12)
    monkeypatch.setenv("EMBEDSTORE_MAX_IMAGE_PIXELS", "many")
    r = embed("build", image_folder, "--store", tmp_path / "t.h5", "--encoder", "test:tiny")
    assert r.exit_code == 2 and "EMBEDSTORE_MAX_IMAGE_PIXELS='many' is not a whole number" in r.output


def test_rows_removed_from_a_manifest_are_said_and_listed_by_ls_not_in(image_folder, tmp_path, build_tiny):
    """Rows deleted from a manifest stayed in the store without a word: their files exist, so
    `ls --status missing` did not list them either, and fit-head trained on them. The build now
    counts them, and `embed ls --not-in MANIFEST` lists them for --exclude."""
    files = sorted(f for f in image_folder.rglob("*") if f.is_file())
    m = tmp_path / "m.csv"
    m.write_text("path,label\n" + "".join(f"{f},{f.parent.name}\n" for f in files))
    store = tmp_path / "m.h5"
    r = build_tiny(m, store)
    assert r.encoded == 12 and not any("not listed" in n for n in r.notes)
    files = files[:1] + files[3:]  # two rows removed
    m.write_text("path,label\n" + "".join(f"{f},{f.parent.name}\n" for f in files))
    r = build_tiny(m, store)
    (note,) = [n for n in r.notes if "not listed in this manifest" in n]
    assert note.startswith("2 item(s) of the store are not listed in this manifest")
    assert f"`embed ls {store} --not-in {m} > unlisted.txt`" in note
    ls = embed("ls", store, "--not-in", m)
    with open_store(store) as st:
        ids = dict(zip(st.items()["uri"], st.items()["id"]))
    removed = sorted(set(ids.values()) - {ids[str(f)] for f in files})
    assert ls.exit_code == 0 and sorted(ls.stdout.splitlines()) == removed and len(removed) == 2, ls.output
    (tmp_path / "unlisted.txt").write_text(ls.stdout)
    r = embed("fit-head", "knn", "--store", store, "--exclude", tmp_path / "unlisted.txt", "--test-fraction", "0", "--json", "-q")
    assert r.exit_code == 0 and json.loads(r.stdout)["excluded"]["ids"] == 2, r.output
    r = embed("ls", store, "--not-in", tmp_path / "nope.csv")
    assert r.exit_code == 2 and "does not exist" in r.output


def test_rehash_finds_a_file_swapped_for_another_of_the_same_size_and_time(tmp_path, build_tiny):
    """Unpacking an archive (or cp -p) can replace a file with another of the same size and time: the
    fast path (path, size, mtime) keeps the old vector, as documented; --rehash reads the bytes again,
    re-encodes exactly the swapped files and serves their new vectors."""
    from conftest import write_image
    from embedstore.search.query import search

    src = tmp_path / "p"
    for c, colour in (("cat", (200, 60, 40)), ("dog", (40, 160, 60))):
        for i in range(2):  # BMP: one size on disk for one size of image
            write_image(src / c / f"{i}.bmp", colour, seed=i + (10 if c == "dog" else 0), size=(32, 32), fmt="BMP")
    t = (1_700_000_000_000_000_000,) * 2
    for f in src.rglob("*.bmp"):
        os.utime(f, ns=t)
    build_tiny(src, tmp_path / "s.h5")
    a, b = src / "cat" / "0.bmp", src / "dog" / "0.bmp"
    da, db = a.read_bytes(), b.read_bytes()
    assert len(da) == len(db) and da != db
    a.write_bytes(db), b.write_bytes(da)  # swapped: same sizes, times put back
    os.utime(a, ns=t), os.utime(b, ns=t)
    r = build_tiny(src, tmp_path / "s.h5")
    assert r.encoded == 0 and r.unchanged == 4  # the fast path: what it trusts did not change
    r = build_tiny(src, tmp_path / "s.h5", rehash=True)
    assert r.encoded == 2 and r.unchanged == 2, r
    hit = search(tmp_path / "s.h5", image=a, k=1, include_self=True).hits[0]
    assert hit["id"] == "cat/0.bmp" and hit["score"] == pytest.approx(1.0, abs=1e-5)
    assert "--rehash" in embed("build", "--help").stdout
