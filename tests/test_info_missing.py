"""`embed info`: how many ok items have files that no longer exist (the build keeps them, by design),
and the commands it suggests name the store as the user gave it."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import embed


def _info(store, *extra):
    r = embed("info", store, *extra)
    assert r.exit_code == 0, r.output
    return r.stdout


def test_info_counts_items_whose_files_no_longer_exist(image_folder, tmp_path, build_tiny):
    store = tmp_path / "s.h5"
    build_tiny(image_folder, store)
    (image_folder / "cat" / "cat_001.png").unlink()  # deleted
    (image_folder / "dog" / "dog_002.jpg").rename(image_folder / "cat" / "was_dog.jpg")  # moved to another class
    assert _items_line(_info(store)) == (
        f"  items: 12 (12 ok, 0 quarantined; 2 with files that no longer exist: `embed ls {store} --status missing` lists them)")
    d = json.loads(_info(store, "--json"))
    assert (d["missing_files"], d["missing_files_checked"], d["missing_files_sampled"]) == (2, 12, False)
    # after a rebuild (which says so once and keeps them, with the moved file's new item beside its old one)
    build_tiny(image_folder, store)
    assert "13 ok, 0 quarantined; 2 with files that no longer exist" in _info(store)
    assert json.loads(_info(store, "--json"))["missing_files"] == 2
    # the very items `embed ls --status missing` lists: one rule for both
    assert embed("ls", store, "--status", "missing").stdout.splitlines() == ["cat/cat_001.png", "dog/dog_002.jpg"]


def test_info_says_nothing_of_missing_files_when_none_is_missing(image_folder, tmp_path, build_tiny):
    store = tmp_path / "s.h5"
    build_tiny(image_folder, store)
    text = _info(store)
    assert _items_line(text) == "  items: 12 (12 ok, 0 quarantined)"
    assert "no longer exist" not in text and "--status missing" not in text
    d = json.loads(_info(store, "--json"))
    assert (d["missing_files"], d["missing_files_checked"], d["missing_files_sampled"]) == (0, 12, False)


def test_info_on_a_huge_store_looks_at_a_sample_and_says_so(image_folder, tmp_path, build_tiny, monkeypatch):
    import embedstore.cli.info as info

    store = tmp_path / "s.h5"
    build_tiny(image_folder, store)
    for f in (image_folder / "cat").iterdir():  # every cat is gone: the sample, spread over the store, finds some
        f.unlink()
    monkeypatch.setattr(info, "MISSING_CHECK_MOST", 3)  # 12 ok items: 1 in 4 looked at
    d = json.loads(_info(store, "--json"))
    assert (d["missing_files_checked"], d["missing_files_sampled"], d["missing_files_every"]) == (3, True, 4)
    assert 0 < d["missing_files"] <= 3
    assert (f"; files that no longer exist: {d['missing_files']} of a sample of 3 (1 in 4 ok items), "
            f"`embed ls {store} --status missing` lists every one)") in _info(store)


def test_file_gone_looks_only_for_local_files(tmp_path):
    from embedstore.sources.items import stored_uri
    from embedstore.store.select import file_gone

    here = tmp_path / "a.jpg"
    here.write_bytes(b"x")
    assert not file_gone(str(here)) and file_gone(str(tmp_path / "b.jpg"))
    assert file_gone(stored_uri(str(tmp_path / "caf\udce9.jpg")))  # a file:// uri is a local path (undecodable bytes)
    assert not file_gone("https://example.com/b.jpg") and not file_gone("s3://bucket/b.jpg")  # not a path: nothing here to miss
    assert not file_gone(str(tmp_path / "texts.txt#3"), text="a line of text")  # a text item has no file of its own


def test_info_advice_names_the_store_as_given(image_folder, tmp_path, build_tiny, monkeypatch):
    store = tmp_path / "c4" / "s.h5"
    build_tiny(image_folder, store)
    idx = next((Path(str(store) + ".d") / "index").glob("*.faiss"))
    data = bytearray(idx.read_bytes())
    data[len(data) // 2] ^= 0x01
    idx.write_bytes(bytes(data))
    monkeypatch.chdir(tmp_path)  # from another folder, where s.h5 would be a different store
    text = _info("c4/s.h5")
    assert "DAMAGED" in text and "`embed verify c4/s.h5 --repair` rebuilds it" in text, text
    assert "embed verify s.h5" not in text
    assert "file(s) in c4/s.h5.d/catalog" in text, text  # the catalog's folder named from here too
    (image_folder / "cat" / "cat_000.jpg").unlink()
    assert "`embed ls c4/s.h5 --status missing` lists them" in _info("c4/s.h5")


def _items_line(text: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("  items:"))
