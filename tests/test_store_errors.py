"""A --store path that is not ours is refused and never modified."""

import h5py
import pytest

from embedstore.errors import StoreError, StoreLockedError
from embedstore.store import open_store, sidecar_dir


def _make(tmp_path, kind):
    p = tmp_path / "target.h5"
    if kind == "text":
        p.write_text("my precious notes\n")
        match = "not an HDF5 file"
    elif kind == "foreign-hdf5":
        with h5py.File(p, "w") as f:
            f["data"] = [1, 2, 3]
        match = "not an embedstore store"
    elif kind == "newer-schema":
        with h5py.File(p, "w") as f:
            f.attrs["format"] = "embedstore"
            f.attrs["embedstore_schema"] = 99
        match = "schema 99, newer"
    else:
        p = tmp_path / "dir.h5"
        p.mkdir()
        match = "is a folder"
    return p, match


@pytest.mark.parametrize("kind", ["text", "foreign-hdf5", "newer-schema", "folder"])
def test_foreign_store_paths_are_refused_untouched(image_folder, tmp_path, build_tiny, kind):
    p, match = _make(tmp_path, kind)
    before = p.read_bytes() if p.is_file() else None
    with pytest.raises(StoreError, match=match):
        build_tiny(image_folder, p)
    with pytest.raises(StoreError, match=match):
        open_store(p)
    if before is not None:
        assert p.read_bytes() == before
    assert not sidecar_dir(p).exists()


def test_missing_store_for_reading(tmp_path):
    with pytest.raises(StoreError, match="does not exist; create it with `embed build"):
        open_store(tmp_path / "nope.h5")


def test_second_writer_is_refused(image_folder, tmp_path, build_tiny):
    store = tmp_path / "s.h5"
    build_tiny(image_folder, store)
    with open_store(store, mode="a"):
        with pytest.raises(StoreLockedError, match="being written by another process"):
            build_tiny(image_folder, store)
        assert open_store(store).info()["ok"] == 12  # readers still work while a writer holds the lock


def test_bad_source_does_not_create_a_store(tmp_path, build_tiny):
    from embedstore.errors import SourceError

    with pytest.raises(SourceError):
        build_tiny(tmp_path / "missing", tmp_path / "s.h5")
    assert not (tmp_path / "s.h5").exists() and not sidecar_dir(tmp_path / "s.h5").exists()


def test_a_missing_shard_is_reported_not_silently_dropped(tmp_path, image_folder, build_tiny):
    """Readers refuse a store whose catalog lists a shard that is gone; a build re-embeds its items."""
    import pytest

    from embedstore.errors import StoreError
    from embedstore.store import open_store

    build_tiny(image_folder, tmp_path / "s.h5")  # 4-row shards: several of them
    shard = sorted((tmp_path / "s.h5.d" / "shards").rglob("*.h5"))[0]
    shard.unlink()
    with pytest.raises(StoreError, match="shard file\\(s\\) listed in .*s.h5 are missing"):
        open_store(tmp_path / "s.h5")
    r = build_tiny(image_folder, tmp_path / "s.h5")
    assert r.encoded >= 1
    with open_store(tmp_path / "s.h5") as st:
        assert st.select_set().count == 12


def test_stores_written_before_the_text_column_still_read(tmp_path, image_folder, build_tiny):
    import h5py

    from embedstore.store import open_store

    build_tiny(image_folder, tmp_path / "s.h5")
    for f in [tmp_path / "s.h5", *sorted((tmp_path / "s.h5.d" / "shards").rglob("*.h5"))]:
        with h5py.File(f, "r+") as h:
            del h["items"]["text"]
    with open_store(tmp_path / "s.h5") as st:
        items = st.items()
        assert len(items["id"]) == 12 and set(items["text"]) == {""}
    assert build_tiny(image_folder, tmp_path / "s.h5").encoded == 0  # and a build carries on as before


def test_a_stores_data_folder_given_for_the_store_names_the_store_file(tmp_path, image_folder, build_tiny):
    """`embed info s.h5.d` suggested 's.h5.d.h5', a file to create; it names s.h5, the store's file."""
    build_tiny(image_folder, tmp_path / "s.h5")
    with pytest.raises(StoreError, match=r"s\.h5\.d is the data folder of the store .*s\.h5; give that file instead"):
        open_store(tmp_path / "s.h5.d")
