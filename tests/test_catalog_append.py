"""The catalog appended during a build (store/segments.py, issue 17 item 5): each update writes only
the rows committed since the last one, as a segment, and a head over the earlier catalog and the
segments; readers read it as any catalog; damage in a segment is refused; the final refresh writes
the catalog whole; a kill at any point leaves a store that opens and resumes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from embedstore.errors import DamagedStoreError, StoreError
from embedstore.store import ItemRows, open_store
from embedstore.store import integrity, segments
from embedstore.store.integrity import ROW_COLUMNS, verify_store

ATTRS = {"encoder": "synthetic", "dim": 8, "dtype": "float16", "normalize": "l2", "modality": "image"}
SET = "synthetic-0000"


@pytest.fixture
def small_blocks(monkeypatch):
    """Row blocks of 50 rows, so that a few hundred rows cross many block ends (ROW_BLOCK is 65,536)."""
    monkeypatch.setattr(integrity, "ROW_BLOCK", 50)


def _commit(st, set_name, lo, hi, seed, attrs=ATTRS):
    rng = np.random.default_rng(seed)
    items = ItemRows()
    ids = [f"r{i:05d}" for i in range(lo, hi)]
    ok, sha = [], []
    for i, item_id in zip(range(lo, hi), ids):
        bad = i % 17 == 0  # some quarantined items: rows in the item table without a vector
        items.append(id=item_id, uri=f"/data/é/{item_id}.jpg", sha256=f"h{i}", status="quarantined" if bad else "ok",
                     reason="unreadable" if bad else "", label=("cat", "dog", "")[i % 3], split=("train", "test")[i % 2],
                     meta=json.dumps({"brand": f"b{i % 4}"}) if i % 5 else "")
        if not bad:
            ok.append(item_id)
            sha.append(f"h{i}")
    X = rng.normal(size=(len(ok), 8)).astype(np.float16)
    st.commit(set_name, attrs, items, ok, sha, X, {})


def _appended_store(path: Path, commits: int, rows: int = 37) -> Path:
    """A store whose catalog was written whole once, then appended to `commits` times (two sets)."""
    with open_store(path, mode="a", create=True) as st:
        _commit(st, SET, 0, 60, 0)
        st.refresh(index=True)
        other = {**ATTRS, "encoder": "synthetic-b"}
        for k in range(commits):
            lo = 60 + k * rows
            _commit(st, SET if k % 4 else "synthetic-b-0000", lo, lo + rows, k + 1, ATTRS if k % 4 else other)
            assert st.append_catalog()
    return path


def _catalog(path: Path) -> dict:
    """Everything a reader gets from a catalog, through the Store's readers."""
    with open_store(path) as st:
        out = {"items": {c: list(v) for c, v in st.items().items()}}
        for vs in st.vector_sets():
            rows = st.rows(vs.name)
            out[vs.name] = {"count": vs.count, "ids": list(rows.ids), "labels": list(rows.labels), "uris": list(rows.uris),
                            "metas": list(rows.metas), "vectors": np.concatenate([v for _, v in st.iter_vectors(vs.name)])}
    with h5py.File(path) as f:
        for name, g in f["vectors"].items():
            out[name]["tables"] = {k: g[k][()] for k in ("item_row", "row_sha256", "row_text/block_start")}
            out[name]["text"] = {c: g["row_text"][c][()] for c in ROW_COLUMNS}
    return out


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    assert a["items"] == b["items"]
    for name in a.keys() - {"items"}:
        for k, v in a[name].items():
            w = b[name][k]
            if isinstance(v, dict):
                for kk in v:
                    assert np.array_equal(v[kk], w[kk]), (name, k, kk)
            elif isinstance(v, np.ndarray):
                assert np.array_equal(v, w), (name, k)
            else:
                assert v == w, (name, k)


def _whole_copy(src: Path, dst: Path) -> Path:
    shutil.copy(src, dst)
    shutil.copytree(src.with_name(src.name + ".d"), dst.with_name(dst.name + ".d"))
    with open_store(dst, mode="a"):  # a writer writes a head whole
        pass
    with h5py.File(dst) as f:
        assert not segments.is_head(f)
    return dst


def test_an_appended_catalog_reads_as_the_one_written_whole(tmp_path, small_blocks):
    store = _appended_store(tmp_path / "s.h5", commits=19)
    with h5py.File(store) as f:
        parts = segments.parts_of(f)
        assert segments.is_head(f) and f["items"]["id"].is_virtual
    # 19 updates: two merges of eight, so the base, two merged segments and three new ones
    assert len(parts) == 1 + 2 + 3 and parts[0].split("/")[-1].startswith("base-")
    head = _catalog(store)
    assert head[SET]["count"] == sum(1 for i in range(60 + 19 * 37) if i % 17 and (i < 60 or ((i - 60) // 37) % 4)) > 400
    _same(head, _catalog(_whole_copy(store, tmp_path / "w.h5")))
    report = verify_store(store)  # the head checked against the shards, cell by cell
    assert [p for p in report["problems"] if p["what"] == "catalog"] == []
    with open_store(store) as st:
        stored = st.stored_items()
        assert stored.n == 60 + 19 * 37 and list(stored.positions(["r00003", "r00700", "nope"])) == [3, 700, -1]


def test_search_and_filters_on_a_head_match_the_catalog_written_whole(tmp_path, small_blocks):
    from embedstore.search.query import SearchContext

    store = _appended_store(tmp_path / "s.h5", commits=9)
    whole = _whole_copy(store, tmp_path / "w.h5")
    for where in (None, "label=cat", "brand=b1,split=test"):
        a = SearchContext(store, SET).run(SearchContext(store, SET).vector_for_id("r00301"), 10, where)[0]
        b = SearchContext(whole, SET).run(SearchContext(whole, SET).vector_for_id("r00301"), 10, where)[0]
        assert [(h["id"], h["label"], h["score"]) for h in a] == [(h["id"], h["label"], h["score"]) for h in b] and len(a) == 10


def test_a_changed_value_in_a_segment_is_refused_and_repair_rewrites_it(tmp_path, small_blocks):
    store = _appended_store(tmp_path / "s.h5", commits=3)
    with h5py.File(store) as f:
        seg = store.parent / segments.parts_of(f)[2]
    with h5py.File(seg, "r+") as f:
        f["items"]["label"][2] = "evil"
    with open_store(store) as st:
        with pytest.raises(StoreError, match=r"does not match its checksum \(rows"):
            st.items()
        with pytest.raises(StoreError, match="does not match its checksum"):
            st.stored_items()
    assert any("item column 'label' differs" in p["problem"] for p in verify_store(store)["problems"])
    after = integrity.repair_store(store)  # `embed verify --repair`: the catalog written whole from the shards
    assert [p for p in after["problems"] if p["what"] == "catalog"] == []
    with open_store(store) as st:
        assert "evil" not in set(st.items()["label"])


def test_a_flipped_byte_in_a_segments_row_text_is_detected(tmp_path, small_blocks):
    store = _appended_store(tmp_path / "s.h5", commits=3)
    with h5py.File(store) as f:
        seg = store.parent / segments.parts_of(f)[-1]
    with h5py.File(seg) as f:
        ds = f[f"vectors/{SET}/row_text/uri"]
        at = ds.id.get_chunk_info(0).byte_offset + 7
    raw = bytearray(seg.read_bytes())
    raw[at] ^= 0x20
    seg.write_bytes(bytes(raw))
    with open_store(store) as st:
        with pytest.raises(DamagedStoreError, match="uri column in block .* does not match its checksum"):
            st.rows(SET).uris
    assert any(p["what"] == "catalog" for p in verify_store(store)["problems"])
    after = integrity.repair_store(store)  # `embed verify --repair`: the catalog written whole from the shards
    assert [p for p in after["problems"] if p["what"] == "catalog"] == []
    with open_store(store) as st:
        assert all(u.startswith("/data/é/") for u in st.rows(SET).uris)


@pytest.mark.parametrize("damage", ["changed", "gone"])
def test_a_merge_refuses_a_damaged_or_missing_part_and_the_catalog_is_rewritten(tmp_path, small_blocks, monkeypatch, damage):
    monkeypatch.setattr(segments, "FANOUT", 3)
    store = tmp_path / "s.h5"
    with open_store(store, mode="a", create=True) as st:
        _commit(st, SET, 0, 20, 0)
        st.refresh(index=False)
        for k in range(2):
            _commit(st, SET, 20 + 10 * k, 30 + 10 * k, k)
            assert st.append_catalog()
        with h5py.File(store) as f:
            seg = store.parent / segments.parts_of(f)[1]
        if damage == "changed":
            with h5py.File(seg, "r+") as f:
                f["items"]["split"][1] = "train!"
        else:
            seg.unlink()
        _commit(st, SET, 40, 50, 5)
        if damage == "changed":
            with pytest.raises(DamagedStoreError, match="does not match its checksum"):
                st.append_catalog()  # the third segment makes three of level 0: their merge reads the damaged one
            assert st._appender is None
        assert st.finish_append() is False  # a build's last step: the build then rewrites the catalog whole
        assert "rewrote it whole from the shards" in st.notes[-1]
        st.refresh(index=True)
    with open_store(store) as st:
        items = st.items()
        assert len(items["id"]) == 50 and "train!" not in set(items["split"])
        assert st.select_set().count == sum(1 for i in range(50) if i % 17)
    assert [p for p in verify_store(store)["problems"] if p["what"] == "catalog"] == []


def test_a_build_of_new_items_appends_and_one_that_changes_items_rewrites(tmp_path, monkeypatch):
    from embedstore.ingest.runner import build

    monkeypatch.setattr(segments, "GRACE_S", 0.0)
    src = tmp_path / "t.txt"
    src.write_text("".join(f"text number {i} about {('cats', 'dogs', 'owls')[i % 3]}\n" for i in range(300)))
    store = tmp_path / "s.h5"
    rep = build(src, store, encoder="test:hash-text", progress=False, shard_rows=20, catalog_seconds=0.0)
    assert rep.encoded == 300 and rep.catalog_updates >= 1
    assert rep.catalog_appends == rep.catalog_updates  # no whole rewrite during the build
    assert rep.catalog_appended and not rep.catalog_rewritten  # nor at its end
    from conftest import embed

    r = embed("info", store)
    assert r.exit_code == 0 and "catalog: appended to by builds, its rows in" in r.stdout
    with h5py.File(store) as f:
        assert segments.is_head(f)
        assert sorted(Path(p).name for p in segments.parts_of(f)) == sorted(p.name for p in (tmp_path / "s.h5.d" / "catalog").iterdir())
    assert verify_store(store)["ok"]
    # a second build that adds items appends too; one that changes an item rewrites the catalog whole
    with src.open("a") as fh:
        fh.writelines(f"more text {i}\n" for i in range(100))
    rep = build(src, store, encoder="test:hash-text", progress=False, shard_rows=20, catalog_seconds=0.0)
    assert rep.encoded == 100 and rep.catalog_appends == rep.catalog_updates >= 1 and rep.catalog_appended
    with open_store(store) as st:
        assert st.select_set().count == 400 and st.select_set().index["ntotal"] == 400
    assert verify_store(store)["ok"]
    lines = src.read_text().splitlines()
    lines[5] = "a changed line"
    src.write_text("\n".join(lines) + "\n")
    rep = build(src, store, encoder="test:hash-text", progress=False, shard_rows=20, catalog_seconds=0.0)
    assert rep.encoded == 1 and rep.catalog_appends == 0 and rep.catalog_rewritten and not rep.catalog_appended
    with open_store(store) as st:
        assert st.select_set().count == 400 and "a changed line" in set(st.rows(st.select_set().name).texts)
    with h5py.File(store) as f:
        assert not segments.is_head(f)
    assert json.loads(embed("info", store, "--json").stdout)["catalog_parts"] == 0
    assert list((tmp_path / "s.h5.d" / "catalog").iterdir()) == []  # the parts it no longer uses, swept (no grace here)
    assert verify_store(store)["ok"]


def test_retired_parts_wait_out_their_grace_then_any_opener_sweeps_them(tmp_path, small_blocks):
    store = _appended_store(tmp_path / "s.h5", commits=2)
    folder = tmp_path / "s.h5.d" / "catalog"
    with open_store(store) as st:  # a reader holds the head open while a writer replaces it
        rows = st.rows(SET).pin()
        with open_store(store, mode="a") as w:
            w.refresh(index=False)  # written whole (as `embed verify --repair` or a build that changes items does)
        assert len(rows.labels) == len(rows) > 80  # read through the head's segments, which are still there
    assert len(list(folder.iterdir())) == 3
    old = time.time() - segments.GRACE_S - 5
    for p in folder.iterdir():
        os.utime(p, (old, old))
    with open_store(store):  # a reader, with no writer about
        pass
    assert list(folder.iterdir()) == []


APPENDER = """
import sys
sys.path.insert(0, {tests!r})
import test_catalog_append as t
from embedstore.store import open_store
with open_store({store!r}, mode="a", create=True) as st:
    t._commit(st, t.SET, 0, 30, 0)
    st.refresh(index=False)
    for k in range(12):  # as a build's catalog thread does: commit, append, ... (a merge at the 8th)
        t._commit(st, t.SET, 30 + 10 * k, 40 + 10 * k, k)
        assert st.append_catalog()
"""


@pytest.mark.parametrize("point", ["segment:written", "segment:merged", "head:written"])
def test_a_kill_while_appending_loses_no_committed_row(tmp_path, point):
    store = tmp_path / "s.h5"
    env = {**os.environ, "EMBEDSTORE_FAULT": point}
    proc = subprocess.run([sys.executable, "-c", APPENDER.format(tests=os.path.dirname(__file__), store=str(store))],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    with open_store(store) as st:  # a reader: what the kill left opens, with every committed shard's rows
        committed = len(st.items()["id"])
        assert committed > 30 and committed % 10 == 0
    with open_store(store, mode="a"):  # the next writer brings the catalog up to date (whole, when shards are unlisted)
        pass
    with open_store(store) as st:
        assert len(st.items()["id"]) == committed
        assert st.select_set().count == sum(1 for i in range(committed) if i % 17)
    assert [p for p in verify_store(store)["problems"] if p["what"] == "catalog"] == []


def test_a_build_killed_after_an_append_resumes(tmp_path):
    src = tmp_path / "t.txt"
    src.write_text("".join(f"line {i}\n" for i in range(400)))
    store = tmp_path / "s.h5"
    cmd = [str(Path(sys.executable).with_name("embed")), "build", str(src), "--store", str(store), "--encoder",
           "test:hash-text", "--shard-size", "10", "--batch-size", "5", "--quiet"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "EMBEDSTORE_CATALOG_SECONDS": "0", "EMBEDSTORE_FAULT": "head:written"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    with h5py.File(store) as f:
        assert segments.is_head(f)
    with open_store(store) as st:  # readers read the head the kill left
        assert 0 < st.select_set().count < 400
    env.pop("EMBEDSTORE_FAULT")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open_store(store) as st:
        assert st.select_set().count == 400 and len(set(st.rows(st.select_set().name).ids)) == 400
    assert verify_store(store)["ok"]


def test_finishing_extends_only_the_indexes_of_sets_it_added_to(tmp_path, small_blocks):
    store = _appended_store(tmp_path / "s.h5", commits=5)  # rows in both sets
    with open_store(store, mode="a") as st:
        assert st.finish_append()
    idx = tmp_path / "s.h5.d" / "index"
    before = {p.name: p.stat().st_mtime_ns for p in idx.iterdir()}
    with open_store(store, mode="a") as st:
        _commit(st, SET, 5000, 5030, 9)  # only the first set grows
        assert st.finish_append()
        counts = {vs.name: (vs.count, vs.index.get("ntotal")) for vs in st.vector_sets()}
    after = {p.name: p.stat().st_mtime_ns for p in idx.iterdir()}
    changed = {n for n in after if after[n] != before.get(n)}
    assert changed == {f"{SET}.faiss", f"{SET}.json"}
    assert all(n == ntotal for n, ntotal in counts.values())
    assert [p for p in verify_store(store)["problems"] if p["what"] in ("catalog", "index")] == []


@pytest.mark.parametrize("var,value", [("EMBEDSTORE_CATALOG_SECONDS", "often"), ("EMBEDSTORE_CATALOG_SECONDS", "-1"),
                                       ("EMBEDSTORE_EXACT_MAX", "1.5")])
def test_a_malformed_setting_is_one_line_before_anything_runs(tmp_path, monkeypatch, var, value):
    from conftest import embed

    src = tmp_path / "t.txt"
    src.write_text("one\ntwo\n")
    monkeypatch.setenv(var, value)
    r = embed("build", src, "--store", tmp_path / "s.h5", "--encoder", "test:hash-text")
    assert r.exit_code == 2 and f"{var}='{value}' is not a" in r.output and "Traceback" not in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1
    if var == "EMBEDSTORE_CATALOG_SECONDS":
        assert not (tmp_path / "s.h5").exists()  # nothing was started
