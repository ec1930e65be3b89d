"""Fuzzing the store: truncated files and flipped bytes in shards, the index and the catalog. Every
damage is either found (`embed verify` exits 1, readers refuse with one line) or provably harmless
(the bytes read are exactly the ones written): corrupted bytes are never used silently."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import copy_store, embed
from embedstore.errors import StoreError
from embedstore.store import open_store
from embedstore.store.shards import list_shards


def _read_all(store: Path):
    with open_store(store) as st:
        name = st.select_set().name
        vecs = {i: v for ids, X in st.iter_vectors(name) for i, v in zip(ids, X)}
        items = {k: list(v) for k, v in st.items().items()}
        index, _ = st.index(name)
        return vecs, items, index.ntotal


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from conftest import make_image_folder
    from embedstore.ingest import build

    root = tmp_path_factory.mktemp("fuzz")
    src = make_image_folder(root / "photos")
    store = root / "s.h5"
    build(src, store, encoder="test:tiny", workers=0, precision="fp32", progress=False, batch_size=4, shard_rows=4)
    return store, _read_all(store)


def _rebuild_repairs(store: Path, tmp_path: Path, truth) -> dict:
    """The same build over the same seeded images repairs the store: verify passes and every item is
    back; returns the vectors read."""
    from conftest import make_image_folder

    photos = make_image_folder(tmp_path / "photos")  # the same seeded images as the source
    r = embed("build", photos, "--store", store, "--encoder", "test:tiny", "--workers", 0, "--precision", "fp32",
              "--batch-size", 4, "--shard-size", 4, "--quiet")
    assert r.exit_code == 0, r.stderr
    v = embed("verify", store)
    assert v.exit_code == 0, v.stdout[-2000:]
    vecs, _, ntotal = _read_all(store)
    assert vecs.keys() == truth[0].keys() and ntotal == truth[2]
    return vecs


def _target(store: Path, which: str) -> Path:
    side = Path(str(store) + ".d")
    if which == "shard":
        d = next((side / "shards").iterdir())
        return d / list_shards(d)[1]
    if which == "index":
        return next((side / "index").glob("*.faiss"))
    return store


@pytest.mark.parametrize("which", ["shard", "index", "catalog"])
@pytest.mark.parametrize("seed", range(8))
def test_flipped_bytes_are_found_or_harmless(built, tmp_path, which, seed):
    src, truth = built
    store = copy_store(src, tmp_path / "c.h5")
    f = _target(store, which)
    data = bytearray(f.read_bytes())
    rng = np.random.default_rng(seed)
    for pos in rng.choice(len(data), size=1 + seed % 3, replace=False):
        data[pos] ^= int(rng.integers(1, 256))
    f.write_bytes(bytes(data))
    r = embed("verify", store, "--json")
    assert r.exit_code in (0, 1), r.stderr
    if r.exit_code == 1:
        assert json.loads(r.stdout)["problems"]
    try:
        got = _read_all(store)
    except StoreError as e:
        assert "\n" not in str(e)
        assert r.exit_code == 1  # whatever a reader refuses, verify reports
    else:
        if r.exit_code == 0:  # verify passed it: then what is read is exactly what was written
            assert got[1] == truth[1] and got[2] == truth[2]
            assert got[0].keys() == truth[0].keys()
            assert all(np.array_equal(got[0][i], truth[0][i]) for i in truth[0])


@pytest.mark.parametrize("which", ["shard", "index", "catalog"])
@pytest.mark.parametrize("keep", [0.0, 0.1, 0.5, 0.9, 0.99])
def test_truncated_files_are_found_and_the_build_repairs_them(built, tmp_path, which, keep):
    src, truth = built
    store = copy_store(src, tmp_path / "c.h5")
    f = _target(store, which)
    data = f.read_bytes()
    f.write_bytes(data[: int(len(data) * keep)])
    r = embed("verify", store)
    assert r.exit_code == 1 and "DAMAGED" in r.stdout
    r = embed("info", store)
    if r.exit_code != 0:
        assert len(r.stderr.strip().splitlines()) == 1 and "unexpected" not in r.stderr
    _rebuild_repairs(store, tmp_path, truth)


@pytest.mark.parametrize("attr,value", [("encoder", "torchvision:resnet50"), ("build_precision", "bf16"),
                                        ("normalize", "none"), ("committed", "2001-01-01T00:00:00Z")])
def test_a_changed_shard_attribute_is_found_and_the_build_repairs_it(built, tmp_path, attr, value):
    """A shard's attributes (the provenance the catalog takes from it) carry a checksum: an edited
    value is damage, found by verify and by a writer, never read as the set's provenance."""
    import h5py

    src, truth = built
    store = copy_store(src, tmp_path / "c.h5")
    f = _target(store, "shard")
    with h5py.File(f, "r+") as h:
        assert "attrs_sha256" in h.attrs and h.attrs[attr] != value
        h.attrs[attr] = value
    r = embed("verify", store, "--json")
    assert r.exit_code == 1
    problems = json.loads(r.stdout)["problems"]
    assert any(p["what"] == "shard" and "attributes" in p["problem"] for p in problems), problems
    vecs = _rebuild_repairs(store, tmp_path, truth)
    assert max(float(np.abs(vecs[k] - truth[0][k]).max()) for k in vecs) == 0  # re-embedded exactly as before


@pytest.mark.parametrize("deleted", [("attrs_sha256",), ("vectors_sha256", "attrs_sha256")])
def test_a_deleted_checksum_does_not_pass_a_shard_off_as_one_from_before_checksums(built, tmp_path, deleted):
    """Shards written before checksums are read without them; a shard of this schema always has
    them, so deleting one (with an edit it would have caught) is damage, not an older shard."""
    import h5py

    src, truth = built
    store = copy_store(src, tmp_path / "c.h5")
    f = _target(store, "shard")
    with h5py.File(f, "r+") as h:
        for k in deleted:  # (attrs_sha256 covers the others: deleting one alone is already an attribute edit)
            del h.attrs[k]
        h.attrs["encoder"] = "torchvision:resnet50"
    r = embed("verify", store, "--json")
    assert r.exit_code == 1
    problems = json.loads(r.stdout)["problems"]
    assert any(p["what"] == "shard" and f"no {deleted[0]}, which every shard" in p["problem"] for p in problems), problems
    _rebuild_repairs(store, tmp_path, truth)
