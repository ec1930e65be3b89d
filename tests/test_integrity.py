"""Checksums, `embed verify` and repair: a flipped byte anywhere in a shard's rows or the index is
found, named, never read silently, and repaired by the next build."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import embed
from embedstore.errors import StoreError
from embedstore.store import open_store
from embedstore.store.shards import list_shards


def _shards(store: Path) -> list[Path]:
    root = Path(str(store) + ".d") / "shards"
    return [d / n for d in sorted(root.iterdir()) for n in list_shards(d)]


def _flip_vector_byte(shard: Path, keep_mtime: bool = False) -> None:
    """Flip one byte inside the shard's vector data (found by its bytes in the file)."""
    with h5py.File(shard, "r") as f:
        first = f["vectors"][0].tobytes()
    data = bytearray(shard.read_bytes())
    at = data.find(first)
    assert at > 0
    st = shard.stat()
    data[at + 3] ^= 0x40
    with open(shard, "r+b") as fh:
        fh.seek(at + 3)
        fh.write(bytes([data[at + 3]]))
    if keep_mtime:
        os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))


def _flip_index_byte(store: Path) -> Path:
    idx = next((Path(str(store) + ".d") / "index").glob("*.faiss"))
    data = bytearray(idx.read_bytes())
    data[len(data) // 2] ^= 0x01
    idx.write_bytes(bytes(data))
    return idx


def _verify(store: Path, *extra) -> tuple[int, dict]:
    r = embed("verify", store, "--json", *extra)
    return r.exit_code, json.loads(r.stdout)


def test_a_fresh_store_verifies_intact(image_folder, tmp_path, build_tiny):
    store = tmp_path / "s.h5"
    build_tiny(image_folder, store)
    code, d = _verify(store)
    assert code == 0 and d["ok"] and d["checked"]["shards"] == len(_shards(store)) and d["checked"]["indexes"] == 1
    r = embed("verify", store)
    assert r.exit_code == 0 and "intact" in r.stdout


def _import_named_as_before(monkeypatch):
    """`embed import` as it named its sets before it named them by `set_name_for` as builds do: its
    key hashed the set's preprocessing as the text "{}" (what it stores), not as the object {}."""
    import hashlib
    import re

    import embedstore.store.schema as schema
    from embedstore.encoders.config import canonical_json

    def named_before(prov):
        fields = {**{k: prov[k] for k in schema.KEY_FIELDS}, "preprocess": "{}"}
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", prov["encoder"]).strip("_")
        return f"{slug}-{hashlib.sha256(canonical_json(fields).encode()).hexdigest()[:12]}"

    monkeypatch.setattr(schema, "set_name_for", named_before)


@pytest.mark.parametrize("fmt", ["npy", "parquet"])
def test_imported_sets_verify_intact(image_folder, tmp_path, build_tiny, monkeypatch, fmt):
    """An imported set is named from its provenance by the function verify checks names with (import
    named it otherwise and verify called every imported store damaged); a set imported before that
    is still verified intact, its name reproduced, with a note."""
    from embedstore.store.schema import set_name_for

    store = tmp_path / "s.h5"
    build_tiny(image_folder, store)
    assert embed("export", store, "--format", fmt, "--out", tmp_path / "x").exit_code == 0
    for target in (tmp_path / "new.h5", store):  # into a store of its own, and beside the built set
        r = embed("import", tmp_path / "x", "--store", target, "--json")
        assert r.exit_code == 0, r.output
        code, d = _verify(target)
        assert code == 0 and d["ok"] and not d["notes"], d
        r = embed("verify", target)
        assert r.exit_code == 0 and "intact" in r.stdout
    with monkeypatch.context() as m:
        _import_named_as_before(m)
        r = embed("import", tmp_path / "x", "--store", tmp_path / "old.h5", "--json")
    assert r.exit_code == 0, r.output
    name = json.loads(r.output)["vector_set"]
    with open_store(tmp_path / "old.h5") as st:
        now = set_name_for(st.get_set(name).attrs)
    assert name != now
    code, d = _verify(tmp_path / "old.h5")
    assert code == 0 and d["ok"], d["problems"]
    assert any(name in n and "earlier `embed import`" in n and now in n for n in d["notes"]), d["notes"]


@pytest.mark.parametrize("named", ["now", "before"])
def test_an_imported_shard_whose_provenance_was_rewritten_with_its_checksum_is_found(image_folder, tmp_path, build_tiny,
                                                                                   monkeypatch, named):
    """The name check stays strict for imported sets, those named before included: a key field
    changed along with the shard's attribute checksum no longer gives the set's name."""
    from embedstore.store.shards import attrs_digest

    build_tiny(image_folder, tmp_path / "s.h5")
    assert embed("export", tmp_path / "s.h5", "--out", tmp_path / "x").exit_code == 0
    with monkeypatch.context() as m:
        if named == "before":
            _import_named_as_before(m)
        assert embed("import", tmp_path / "x", "--store", tmp_path / "i.h5").exit_code == 0
    shard = _shards(tmp_path / "i.h5")[0]
    with h5py.File(shard, "r+") as h:
        h.attrs["normalize"] = "none"
        h.attrs["attrs_sha256"] = attrs_digest(h.attrs)
    code, d = _verify(tmp_path / "i.h5")
    assert code == 1
    assert any(p["what"] == "provenance" and p["path"] == str(shard) and "names the set" in p["problem"] for p in d["problems"]), d


def test_flipped_bytes_in_a_shard_and_the_index_are_found_then_repaired_by_build(image_folder, tmp_path, build_tiny):
    store = tmp_path / "s.h5"
    build_tiny(image_folder, store)
    with open_store(store) as st:
        before = {i: v for ids, X in st.iter_vectors(st.select_set().name) for i, v in zip(ids, X)}
    shard = _shards(store)[1]
    _flip_vector_byte(shard)
    idx = _flip_index_byte(store)

    code, d = _verify(store)
    assert code == 1 and not d["ok"]
    found = {(p["what"], Path(p["path"]).name) for p in d["problems"]}
    assert ("shard", shard.name) in found and ("index", idx.name) in found
    assert any("checksum" in p["problem"] for p in d["problems"] if p["what"] == "shard")
    r = embed("verify", store)
    assert r.exit_code == 1 and f"DAMAGED shard {shard}" in r.stdout and "DAMAGED index" in r.stdout

    # readers refuse, with one line naming the shard, rather than read the damaged bytes
    with pytest.raises(StoreError, match=f"{shard.name}.*damaged.*checksum"):
        open_store(store)

    report = build_tiny(image_folder, store)
    assert any("moved it to" in n for n in report.notes) and any("index" in n and "rebuilt" in n for n in report.notes)
    assert report.encoded == 4  # shard_rows=4: exactly the damaged shard's items are re-embedded
    code, d = _verify(store)
    assert code == 0, d["problems"]
    with open_store(store) as st:
        after = {i: v for ids, X in st.iter_vectors(st.select_set().name) for i, v in zip(ids, X)}
    assert after.keys() == before.keys()
    assert max(float(np.abs(after[i] - before[i]).max()) for i in before) < 1e-6


def test_a_flip_that_keeps_the_mtime_is_still_found_by_verify(image_folder, tmp_path, build_tiny):
    store = tmp_path / "s.h5"
    build_tiny(image_folder, store)
    shard = _shards(store)[0]
    _flip_vector_byte(shard, keep_mtime=True)
    code, d = _verify(store)
    assert code == 1 and [Path(p["path"]).name for p in d["problems"]] == [shard.name]


def test_verify_repair_without_the_source(image_folder, tmp_path, build_tiny):
    store = tmp_path / "s.h5"
    build_tiny(image_folder, store)
    shard = _shards(store)[0]
    _flip_vector_byte(shard)
    _flip_index_byte(store)
    code, d = _verify(store, "--repair")
    assert code == 0, d["problems"]
    assert any(shard.name in x and "moved" in x for x in d["repaired"]) and any("index" in x for x in d["repaired"])
    assert d["needs_source"]
    assert (Path(str(store) + ".d") / "damaged" / shard.parent.name / shard.name).exists()
    code, d = _verify(store)  # intact, and still says the moved shard's items wait for a build
    assert code == 0 and any("1 shard(s) moved aside" in n and f"--store {store}" in n for n in d["notes"])
    with open_store(store) as st:  # the rest reads, and search works again
        vs = st.select_set()
        st.index(vs.name)
        assert vs.count == 12 - 4
    report = build_tiny(image_folder, store)  # the source puts the moved items back
    assert report.encoded == 4 and _verify(store)[0] == 0


@pytest.mark.parametrize("lose", ["folder", "one shard"])
def test_repair_refuses_to_drop_the_items_of_missing_shards(image_folder, tmp_path, build_tiny, lose):
    """A store copied without its data folder (the usual mistake: copying only photos.h5), or with a
    shard file gone: --repair would rebuild the catalog from what is there and empty the store of
    those items and their labels. It refuses in one line, names what is missing and the fix, and
    leaves the catalog as it was; restoring the files makes the store whole."""
    import shutil

    store = tmp_path / "s.h5"
    build_tiny(image_folder, store)
    side = Path(str(store) + ".d")
    kept = tmp_path / "kept"
    if lose == "folder":
        shutil.move(side, kept)
    else:
        kept.mkdir()
        shard = _shards(store)[0]
        shutil.move(shard, kept / shard.name)
    before = store.read_bytes()
    r = embed("verify", store, "--repair")
    assert r.exit_code == 2 and r.stderr.startswith("error: not repaired:") and len(r.stderr.strip().splitlines()) == 1
    assert ("data folder" in r.stderr and "copy both" in r.stderr) if lose == "folder" else "1 shard file(s) listed in" in r.stderr and "are missing from" in r.stderr
    assert store.read_bytes() == before
    code, d = _verify(store)  # verify without --repair names the same cause: the folder, not shard by shard
    if lose == "folder":
        (p,) = d["problems"]
        assert p["what"] == "store" and p["problem"] == "its data folder s.h5.d is missing (a store is s.h5 and s.h5.d: copy both)"
        assert not any("catalog" in n and "checked with it" in n for n in d["notes"])
    else:
        assert any(p["what"] == "catalog" and "lists 1 shard(s) that are missing or damaged" in p["problem"] for p in d["problems"])
    if lose == "folder":
        shutil.rmtree(side, ignore_errors=True)
        shutil.move(kept, side)
    else:
        shutil.move(kept / shard.name, shard)
    code, d = _verify(store)
    assert code == 0 and d["ok"]
    with open_store(store) as st:
        assert st.select_set().count == 12


@pytest.mark.parametrize("damage", ["truncate", "zero", "garbage"])
def test_truncated_empty_or_overwritten_shards_are_damaged_not_unexpected(image_folder, tmp_path, build_tiny, damage):
    store = tmp_path / "s.h5"
    build_tiny(image_folder, store)
    shard = _shards(store)[0]
    data = shard.read_bytes()
    shard.write_bytes({"truncate": data[: len(data) // 2], "zero": b"", "garbage": os.urandom(len(data))}[damage])
    code, d = _verify(store)
    assert code == 1 and d["problems"][0]["what"] == "shard"
    with pytest.raises(StoreError, match="damaged"):
        open_store(store)
    report = build_tiny(image_folder, store)
    assert report.encoded == 4 and _verify(store)[0] == 0


def test_a_truncated_index_is_refused_by_search_and_rebuilt_by_build(image_folder, tmp_path, build_tiny):
    store = tmp_path / "s.h5"
    build_tiny(image_folder, store)
    idx = next((Path(str(store) + ".d") / "index").glob("*.faiss"))
    idx.write_bytes(idx.read_bytes()[:100])
    with open_store(store) as st, pytest.raises(StoreError, match="index.*damaged.*embed verify"):
        st.index(st.select_set().name)
    report = build_tiny(image_folder, store)
    assert report.encoded == 0 and any("index" in n and "rebuilt" in n for n in report.notes)
    code, d = _verify(store)
    assert code == 0, d


def test_a_damaged_catalog_is_rebuilt_from_the_shards(image_folder, tmp_path, build_tiny):
    store = tmp_path / "s.h5"
    build_tiny(image_folder, store)
    store.write_bytes(store.read_bytes()[:200])
    with pytest.raises(StoreError, match="catalog.*damaged.*shards are intact"):
        open_store(store)
    code, d = _verify(store)
    assert code == 1 and d["problems"][0]["what"] == "catalog"
    report = build_tiny(image_folder, store)
    assert report.encoded == 0 and report.vectors_in_set == 12 and _verify(store)[0] == 0
    # a catalog that disagrees with its shards: --repair rewrites it and says so (it printed only "intact")
    for shard_dir, why in (("../elsewhere/shards", "(verify found: points at ../elsewhere/shards"),
                           ("elsewhere.h5.d/shards", "(it named elsewhere.h5.d/shards, the folder of the store this one was copied")):
        with h5py.File(store, "r+") as f:
            f.attrs["shard_dir"] = shard_dir
        code, d = _verify(store, "--repair")
        assert code == 0 and any(x.startswith(f"rebuilt the catalog s.h5 from the shards {why}") for x in d["repaired"]), d
        assert not any("still names" in n for n in d["notes"])


def test_verify_errors_are_one_line(tmp_path):
    r = embed("verify", tmp_path / "nope.h5")
    assert r.exit_code != 0 and "does not exist" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = embed("verify", "--help")
    assert r.exit_code == 0 and "embed verify photos.h5" in r.stdout


def test_stores_written_before_checksums_still_read_verify_and_build(image_folder, tmp_path, build_tiny):
    """The additions are backward compatible (no schema bump): shards without checksums are checked
    for structure and finite vectors, said in a note; a catalog without fingerprints is read as is."""
    store = tmp_path / "s.h5"
    build_tiny(image_folder, store)
    with open_store(store, mode="a") as st:  # written whole, as every catalog was then (not a head: store/segments.py)
        st.refresh(index=False)
    for shard in _shards(store):
        with h5py.File(shard, "r+") as f:
            for k in ("vectors_sha256", "items_sha256", "vector_ids_sha256", "attrs_sha256"):  # none existed then
                del f.attrs[k]
            f.attrs["schema_version"] = 1  # nor did later schemas
    with h5py.File(store, "r+") as f:
        del f["shard_size"], f["shard_mtime_ns"], f["items"].attrs["items_sha256"]
    with open_store(store) as st:
        assert st.select_set().count == 12 and len(st.items()["id"]) == 12
    code, d = _verify(store)
    assert code == 0 and d["checked"]["shards_without_checksums"] == 3
    assert any("before checksums" in n for n in d["notes"])
    report = build_tiny(image_folder, store)
    assert report.encoded == 0 and report.unchanged == 12 and _verify(store)[0] == 0


def test_embed_search_never_uses_a_damaged_index(image_folder, tmp_path, build_tiny):
    """A flipped byte in a flat index would change scores silently: search scans the (checksummed)
    stored vectors instead, says so, and gives the answer an intact index gives."""
    store = tmp_path / "s.h5"
    build_tiny(image_folder, store)
    args = ("search", store, "--id", "cat/cat_000.jpg", "-k", 5, "--json")
    want = json.loads(embed(*args).stdout)["hits"]
    _flip_index_byte(store)
    r = embed(*args)
    assert r.exit_code == 0, r.stderr
    got = json.loads(r.stdout)
    assert [h["id"] for h in got["hits"]] == [h["id"] for h in want]
    assert "damaged" in json.dumps(got)
    text = embed("search", store, "--id", "cat/cat_000.jpg", "-k", 5).stdout.splitlines()[0]
    assert "exact scan (the index is damaged" in text and "does not cover" not in text  # the reason, not a build's
    info = embed("info", store).stdout  # said by info too, not only by verify
    assert "DAMAGED (its bytes do not match" in info and "--repair` rebuilds it" in info and "up to date" not in info
    assert json.loads(embed("info", store, "--json").stdout)["vector_sets"][0]["index"]["problem"].startswith("damaged")


def test_a_shard_changed_after_the_writer_checked_it_is_not_copied_into_the_catalog(image_folder, tmp_path, build_tiny):
    """The refresh keeps only short columns of checked shards in memory and reads uri, text, meta and
    sha256 again as it writes the catalog (store/columns.ShardColumn): bytes changed in between are
    refused, and the next refresh checks the shard in full and moves it aside."""
    from embedstore.errors import DamagedStoreError
    from embedstore.store.columns import LAZY_COLUMNS, ShardColumn

    store = tmp_path / "s.h5"
    build_tiny(image_folder, store)
    shard = _shards(store)[0]
    with open_store(store, mode="a") as st:
        st.refresh(index=False)
        cached = st._meta_cache[f"{shard.parent.name}/{shard.name}"]
        assert all(isinstance(cached.items[c], ShardColumn) for c in LAZY_COLUMNS)
        with h5py.File(shard, "r") as f:
            uri = f["items/uri"].asstr()[0].encode()
        data = shard.read_bytes()
        at = data.find(uri)
        assert at > 0
        with open(shard, "r+b") as fh:  # one character of a stored path changed
            fh.seek(at + len(uri) - 5)
            fh.write(b"X")
        with pytest.raises(DamagedStoreError, match="changed after it was checked"):
            st.refresh(index=False)
        st.refresh()
        assert any(shard.name in n and "damaged" in n for n in st.notes), st.notes
    with h5py.File(store, "r") as f:
        uris = set(f["items/uri"].asstr()[()])
    assert uri.decode() not in uris and not any("X" in u[-6:] for u in uris)
    code, d = _verify(store)
    assert code == 0, d


def test_a_store_file_renamed_without_its_folder_says_to_rename_the_folder(image_folder, tmp_path, build_tiny, monkeypatch):
    """Only s.h5 renamed: every door (a reader, verify --repair, a build) names the folder beside it
    and the rename, with the path as the user typed it. A build used to start a new catalog there,
    dropping every set, label and quarantine record the store held."""
    store = tmp_path / "sub" / "s.h5"
    store.parent.mkdir()
    build_tiny(image_folder, store)
    store.rename(tmp_path / "sub" / "renamed.h5")
    monkeypatch.chdir(tmp_path)
    want = ("sub/renamed.h5's data folder is s.h5.d beside it, not renamed.h5.d (the file was renamed without its folder; "
            "a store is NAME.h5 and NAME.h5.d): rename s.h5.d to renamed.h5.d, or the file back to s.h5")
    for args in (["info", "sub/renamed.h5"], ["verify", "sub/renamed.h5", "--repair"],
                 ["build", image_folder, "--store", "sub/renamed.h5", "--encoder", "test:tiny", "-q"]):
        r = embed(*args)
        assert r.exit_code == 2 and want in r.stderr and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
    assert not (tmp_path / "sub" / "renamed.h5.d").exists()
    (tmp_path / "sub" / "s.h5.d").rename(tmp_path / "sub" / "renamed.h5.d")
    with open_store(tmp_path / "sub" / "renamed.h5") as st:  # a reader brings the renamed pair's catalog up to date
        assert st.select_set().count == 12
    assert _verify(tmp_path / "sub" / "renamed.h5")[0] == 0
    # the file copied without its folder, the original still there: copy the folder (a rename would break it)
    import shutil

    shutil.copy(tmp_path / "sub" / "renamed.h5", tmp_path / "sub" / "c.h5")
    for args in (["info", "sub/c.h5"], ["verify", "sub/c.h5", "--json"]):
        r = embed(*args)
        assert r.exit_code != 0 and ("the file was copied from renamed.h5 without its folder" in r.output
                                     and "copy renamed.h5.d to c.h5.d (renamed.h5 still uses renamed.h5.d)" in r.output), (args, r.output)
    assert _verify(tmp_path / "sub" / "renamed.h5")[0] == 0


def test_after_a_repair_the_advised_build_re_embeds_with_the_sets_own_encoder(image_folder, tmp_path, build_tiny):
    """verify's advice, `embed build SOURCE --store S`, embedded with the default encoder: a second
    vector set (effnet), which then became the store's default, and the damaged set's items were
    never re-embedded. A build given no --encoder embeds into a store as its default set was made
    (and says so), so the advice does what it says; with several sets it names the set."""
    import json

    store = tmp_path / "s.h5"
    build_tiny(image_folder, store)
    shard = _shards(store)[0]
    _flip_vector_byte(shard)
    r = embed("verify", store)
    assert r.exit_code == 1 and f"`embed build SOURCE --store {store}` re-embeds its items" in r.output, r.output
    r = embed("verify", store, "--repair")
    assert r.exit_code == 0 and f"--store {store}` to re-embed their items (vector set test_tiny-" in r.output, r.output
    r = embed("build", image_folder, "--store", store, "--workers", 0, "--json")  # as advised, even without --encoder
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["encoder"] == "test:tiny" and d["encoded"] == 4 and d["vectors_in_set"] == 12, d
    assert any("as the store's vector set" in n and "--encoder to embed with another" in n for n in d["notes"]), d["notes"]
    with open_store(store) as st:
        assert [v.encoder for v in st.vector_sets()] == ["test:tiny"]
    r = embed("build", image_folder, "--store", store, "--workers", 0, "--normalize", "none", "--json")
    assert r.exit_code == 0, r.output  # another option without --encoder: the store's encoder, a set of its own
    assert json.loads(r.stdout)["encoder"] == "test:tiny" and json.loads(r.stdout)["encoded"] == 12
    with open_store(store) as st:
        assert [v.encoder for v in st.vector_sets()] == ["test:tiny", "test:tiny"]


def test_a_build_without_encoder_picks_the_stores_set_of_the_sources_kind(image_folder, tmp_path, build_tiny):
    """A store holding an image set and a larger text set: a folder of images built without
    --encoder goes to the image set (the largest set overall is the text one), texts to the text set."""
    import json

    store = tmp_path / "m.h5"
    build_tiny(image_folder, store)
    (tmp_path / "t.txt").write_text("\n".join(f"line number {i} of words" for i in range(30)) + "\n")
    assert embed("build", tmp_path / "t.txt", "--store", store, "--encoder", "test:hash-text", "-q").exit_code == 0
    for source, encoder in ((image_folder, "test:tiny"), (tmp_path / "t.txt", "test:hash-text")):
        r = embed("build", source, "--store", store, "--workers", 0, "--json")
        assert r.exit_code == 0 and json.loads(r.stdout)["encoder"] == encoder, r.output
    with open_store(store) as st:
        assert sorted(v.encoder for v in st.vector_sets()) == ["test:hash-text", "test:tiny"]


def test_a_copied_store_verifies_intact_before_it_is_opened_and_a_foreign_shard_dir_is_damage(image_folder, tmp_path, build_tiny):
    """A store copied whole (s.h5 + s.h5.d -> c.h5 + c.h5.d) has a catalog naming s.h5.d until a
    command opens it and rewrites it. `embed verify` called that DAMAGED (exit 1) while every other
    command rewrote it silently; it is intact with a note, and verify (no --repair) writes nothing.
    A catalog naming anything else than another store's folder is still damage."""
    import shutil

    build_tiny(image_folder, tmp_path / "s.h5")
    shutil.copy(tmp_path / "s.h5", tmp_path / "c.h5")
    shutil.copytree(tmp_path / "s.h5.d", tmp_path / "c.h5.d")
    before = (tmp_path / "c.h5").read_bytes()
    r = embed("verify", tmp_path / "c.h5", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["ok"] and d["problems"] == [] and d["checked"]["rows"] == 12
    assert any("still names s.h5.d/shards" in n and "rebuilds it from this store's shards" in n for n in d["notes"]), d["notes"]
    assert not any("checked with it" in n for n in d["notes"])  # the copy's catalog parts were not read
    assert (tmp_path / "c.h5").read_bytes() == before
    assert embed("info", tmp_path / "c.h5").exit_code == 0  # any command rewrites it: then no note
    assert not any("still names" in n for n in json.loads(embed("verify", tmp_path / "c.h5", "--json").stdout)["notes"])

    with h5py.File(tmp_path / "s.h5", "a") as f:
        f.attrs["shard_dir"] = "../elsewhere/shards"
    r = embed("verify", tmp_path / "s.h5", "--json")
    assert r.exit_code == 1
    assert [p["problem"] for p in json.loads(r.stdout)["problems"]] == ["points at ../elsewhere/shards, not s.h5.d/shards"]
