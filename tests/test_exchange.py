"""`embed export` / `embed import`: the embedding-reader layout, read back by the real
embedding-reader package, and a round trip that searches the same."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import embed, make_image_folder


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from embedstore.ingest import build

    root = tmp_path_factory.mktemp("exchange")
    make_image_folder(root / "photos", classes=("cat", "dog", "owl"), per_class=7)
    build(root / "photos", root / "s.h5", encoder="test:tiny", workers=0, precision="fp32", progress=False)
    return root / "s.h5"


def stored(store):
    """The rows and their vectors as stored (float16 made float32): what an export writes. Readers
    read an l2 set's rows back as unit vectors (store/rows.unit_rows); an export keeps the bytes."""
    from embedstore.store import open_store

    with open_store(store) as st:
        rows = st.rows(st.select_set().name)
        X = np.concatenate([b for _, b in rows.slabs()]).astype(np.float32)
        assert np.abs(X - rows.load()).max() > 0  # the two differ: the comparison below is with the bytes
        return rows, X


def test_npy_export_reads_back_with_embedding_reader(store, tmp_path):
    from embedding_reader import EmbeddingReader

    r = embed("export", store, "--format", "npy", "--out", tmp_path / "x", "--part-rows", 8, "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    rows, X = stored(store)
    assert rep["rows"] == len(X) == 21 and rep["parts"] == 3 and rep["dtype"] == "float16"
    assert sorted(p.name for p in (tmp_path / "x" / "emb").iterdir()) == ["part-00000.npy", "part-00001.npy", "part-00002.npy"]
    reader = EmbeddingReader(str(tmp_path / "x" / "emb"), file_format="parquet_npy", metadata_folder=str(tmp_path / "x" / "metadata"),
                             meta_columns=["id", "label"])
    assert reader.count == 21 and reader.dimension == X.shape[1]
    got, ids, labels = [], [], []
    for emb, meta in reader(batch_size=5, show_progress=False, parallel_pieces=1):
        got.append(emb)
        ids += list(meta["id"])
        labels += list(meta["label"])
    assert ids == list(rows.ids) and labels == list(rows.labels)
    assert np.array_equal(np.concatenate(got).astype(np.float32), X)


def test_parquet_export_reads_back_with_embedding_reader(store, tmp_path):
    from embedding_reader import EmbeddingReader

    r = embed("export", store, "--format", "parquet", "--out", tmp_path / "p", "--dtype", "float32", "--json")
    assert r.exit_code == 0, r.output
    rows, X = stored(store)
    reader = EmbeddingReader(str(tmp_path / "p" / "emb"), file_format="parquet", embedding_column="embedding", meta_columns=["id"])
    got, ids = [], []
    for emb, meta in reader(batch_size=100, show_progress=False, parallel_pieces=1):
        got.append(emb)
        ids += list(meta["id"])
    assert ids == list(rows.ids) and np.array_equal(np.concatenate(got), X)


@pytest.mark.parametrize("fmt", ["npy", "parquet"])
def test_import_of_an_export_searches_the_same(store, tmp_path, fmt):
    assert embed("export", store, "--format", fmt, "--out", tmp_path / "x").exit_code == 0
    r = embed("import", tmp_path / "x", "--store", tmp_path / "copy.h5", "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["rows"] == 21 and rep["normalize"] == "l2" and rep["vector_set"].startswith("external_")
    assert rep["dtype"] == "float16"  # exported as stored (float16), imported at that size, from npy and Parquet alike
    info = json.loads(embed("info", tmp_path / "copy.h5", "--json").output)
    prov = info["vector_sets"][0]["provenance"]
    assert prov["encoder"] == "external:test:tiny" and prov["external"] and info["labels"] == {"cat": 7, "dog": 7, "owl": 7}
    for q in ("cat/cat_001.png", "owl/owl_004.jpg"):
        a = json.loads(embed("search", store, "--id", q, "-k", 5, "--json").output)["hits"]
        b = json.loads(embed("search", tmp_path / "copy.h5", "--id", q, "-k", 5, "--json").output)["hits"]
        assert [(h["id"], h["label"]) for h in a] == [(h["id"], h["label"]) for h in b]
        assert np.allclose([h["score"] for h in a], [h["score"] for h in b], atol=1e-6)
    r = embed("search", tmp_path / "copy.h5", "--image", store.parent / "photos" / "cat" / "cat_000.jpg")
    assert r.exit_code == 2 and "imported" in r.output and "--vector-file" in r.output


def _state(store):
    """Each vector set's (ids, vectors, superseded rows) and the item table: what an import into the
    store must leave as it was."""
    from embedstore.store import open_store

    with open_store(store) as st:
        sets = {}
        for vs in st.vector_sets():
            rows = st.rows(vs.name)
            sets[vs.name] = (list(rows.ids), rows.load(), vs.stale_rows)
        return sets, {c: list(v) for c, v in st.items().items()}


@pytest.mark.parametrize("fmt", ["npy", "parquet"])
def test_import_into_a_built_store_adds_a_set_beside_its_own(store, tmp_path, fmt):
    """An export's ids are the store's items: the imported set joins them, as a second encoder's set
    of the same items does, and nothing stored changes (the import used to commit the items again
    under a hash of their vectors, which superseded every row of the built set). A rebuild then
    re-embeds nothing and keeps both sets whole."""
    from conftest import copy_store
    from embedstore.ingest import build

    work = copy_store(store, tmp_path / "w.h5")
    before, items = _state(work)
    ((built, (ids, X, _)),) = before.items()
    assert embed("export", work, "--format", fmt, "--out", tmp_path / "x").exit_code == 0
    r = embed("import", tmp_path / "x", "--store", work, "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["rows"] == 21 and any("21 imported id(s) are items the store already held" in n for n in rep["notes"])
    after, items_after = _state(work)
    assert items_after == items and set(after) == {built, rep["vector_set"]}
    for name in after:
        got_ids, got_X, stale = after[name]
        assert got_ids == ids and np.array_equal(got_X, X) and stale == 0, name
        hits = json.loads(embed("search", work, "--set", name, "--id", "cat/cat_001.png", "-k", 3, "--json").output)["hits"]
        assert len(hits) == 3
    assert embed("verify", work).exit_code == 0
    # the same import again adds nothing: it used to commit every row a second time (21 stale rows)
    r = embed("import", tmp_path / "x", "--store", work, "--json")
    again = json.loads(r.output)
    assert r.exit_code == 0 and again["rows"] == 0, r.output
    assert any("21 id(s) already have a vector in this set" in n for n in again["notes"])
    assert {k: (v[0], v[2]) for k, v in _state(work)[0].items()} == {built: (ids, 0), rep["vector_set"]: (ids, 0)}
    report = build(store.parent / "photos", work, encoder="test:tiny", workers=0, precision="fp32", progress=False)
    assert report.encoded == 0
    assert {k: (v[0], v[2]) for k, v in _state(work)[0].items()} == {built: (ids, 0), rep["vector_set"]: (ids, 0)}


def test_import_never_changes_an_item_the_store_holds(store, tmp_path):
    """A vector the export says is of other content than the stored item is left out (said in a
    note); a row labelled otherwise keeps the store's label; an export without content hashes (as
    exports were before they carried them) joins by id; when no vector can join, nothing is written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from conftest import copy_store

    work = copy_store(store, tmp_path / "w.h5")
    before, items = _state(work)
    ((built, (ids, X, _)),) = before.items()
    assert embed("export", work, "--out", tmp_path / "x").exit_code == 0
    meta = tmp_path / "x" / "metadata" / "part-00000.parquet"
    t = pq.read_table(meta).to_pydict()
    assert t["id"] == ids and all(len(h) == 64 for h in t["sha256"])
    t["sha256"][0] = "0" * 64  # the vector of another version of item 0's file
    t["label"][1] = "emu"
    pq.write_table(pa.table(t), meta)
    r = embed("import", tmp_path / "x", "--store", work, "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    notes = " ".join(rep["notes"])
    assert rep["rows"] == 20 and "1 vector(s) left out" in notes and repr(ids[0]) in notes and "1 differ" in notes and "'emu'" in notes
    after, items_after = _state(work)
    assert items_after == items and after[built][0] == ids and np.array_equal(after[built][1], X) and after[built][2] == 0
    assert after[rep["vector_set"]][0] == ids[1:] and np.array_equal(after[rep["vector_set"]][1], X[1:])

    del t["sha256"]  # an export made before exports carried content hashes
    t["label"][1] = "cat"
    pq.write_table(pa.table(t), meta)
    r = embed("import", tmp_path / "x", "--store", work, "--name", "older", "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["rows"] == 21 and "for 21 of them the import gives no content hash" in " ".join(rep["notes"])
    after, items_after = _state(work)
    assert items_after == items and after[rep["vector_set"]][0] == ids and after[built][0] == ids

    t["sha256"] = ["0" * 64] * len(ids)  # nothing can join: refused before anything is written
    pq.write_table(pa.table(t), meta)
    shards = sorted(p.relative_to(work.parent) for p in (tmp_path / "w.h5.d" / "shards").rglob("*.h5"))
    r = embed("import", tmp_path / "x", "--store", work, "--name", "other")
    assert r.exit_code == 2 and "none of the 21 vectors" in r.output and "other content" in r.output, r.output
    assert sorted(p.relative_to(work.parent) for p in (tmp_path / "w.h5.d" / "shards").rglob("*.h5")) == shards


def test_quiet_export_and_import_draw_no_progress_bar(store, tmp_path):
    r = embed("export", store, "--out", tmp_path / "x", "-q")
    assert r.exit_code == 0 and r.stderr == "" and "21" in r.stdout, (r.stdout, r.stderr)
    r = embed("import", tmp_path / "x", "--store", tmp_path / "c.h5", "--quiet")
    assert r.exit_code == 0 and r.stderr == "" and "imported 21" in r.stdout, (r.stdout, r.stderr)


def test_import_of_clip_retrieval_style_output(tmp_path):
    """img_emb/*.npy + metadata/*.parquet with image_path and caption, no manifest: norms decide the metric."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    (tmp_path / "c" / "img_emb").mkdir(parents=True)
    (tmp_path / "c" / "metadata").mkdir()
    X = rng.normal(size=(30, 8)).astype(np.float16)
    X /= np.linalg.norm(X.astype(np.float32), axis=1, keepdims=True).astype(np.float16)
    np.save(tmp_path / "c" / "img_emb" / "img_emb_0.npy", X)
    pq.write_table(pa.table({"image_path": [f"/img/{i}.jpg" for i in range(30)], "caption": [f"c{i}" for i in range(30)]}),
                   tmp_path / "c" / "metadata" / "metadata_0.parquet")
    r = embed("import", tmp_path / "c", "--store", tmp_path / "c.h5", "--name", "clip", "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["rows"] == 30 and rep["normalize"] == "l2" and rep["dtype"] == "float16" and rep["notes"]
    h = json.loads(embed("search", tmp_path / "c.h5", "--id", "/img/3.jpg", "-k", 3, "--json").output)["hits"]
    truth = np.argsort(-(X.astype(np.float32) @ X[3].astype(np.float32)))[1:4]
    assert [x["id"] for x in h] == [f"/img/{i}.jpg" for i in truth]


def test_export_import_errors(store, tmp_path):
    (tmp_path / "exists").mkdir()
    (tmp_path / "empty").mkdir()
    (tmp_path / "odd" / "emb").mkdir(parents=True)
    np.save(tmp_path / "odd" / "emb" / "a.npy", np.zeros((3, 4), np.float32))
    cases = [
        (["export", tmp_path / "missing.h5", "--out", tmp_path / "o"], "does not exist"),
        (["export", store, "--out", tmp_path / "o", "--format", "csv"], "--format must be one of npy, parquet"),
        (["export", store, "--out", tmp_path / "exists"], "already exists"),
        (["export", store, "--out", tmp_path / "o", "--dtype", "int8"], "--dtype must be"),
        (["import", tmp_path / "nothing", "--store", tmp_path / "n.h5"], "nothing does not exist"),
        (["import", tmp_path / "odd" / "emb" / "a.npy", "--store", tmp_path / "n.h5"], "a.npy is not a folder"),
        (["import", tmp_path / "empty", "--store", tmp_path / "n.h5"], "holds no vectors"),
        (["import", tmp_path / "odd", "--store", tmp_path / "n.h5"], "must pair up"),
    ]
    for args, message in cases:
        r = embed(*args)
        assert r.exit_code == 2, (args, r.output)
        assert message in r.output, (args, r.output)
    assert not (tmp_path / "o").exists() and not (tmp_path / "n.h5").exists()
    for cmd in ("export", "import"):
        r = embed(cmd, "--help")
        assert r.exit_code == 0 and f"embed {cmd} " in r.output


def test_export_keeps_few_files_open_when_syncing_is_slower_than_writing(tmp_path, monkeypatch):
    """Finished parts are synced on a second thread while the next is written; that queue is bounded
    too, so a slow disk never piles up open files (one part per row here: 60 parts)."""
    import os
    import threading
    import time
    import types

    import embedstore.exchange.export as export_mod
    from conftest import synthetic_store

    store = tmp_path / "s.h5"
    synthetic_store(store, 60, 8, 2)
    real_fsync = os.fsync
    slow = types.SimpleNamespace(**{k: getattr(os, k) for k in dir(os) if not k.startswith("__")})
    slow.fsync = lambda fd: (time.sleep(0.01), real_fsync(fd))[1]
    monkeypatch.setattr(export_mod, "os", slow)
    base = len(os.listdir("/proc/self/fd"))
    most, done = [base], threading.Event()

    def watch():
        while not done.is_set():
            most[0] = max(most[0], len(os.listdir("/proc/self/fd")))
            time.sleep(0.001)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    try:
        rep = export_mod.export(store, tmp_path / "out", part_rows=1, progress=False)
    finally:
        done.set()
        t.join()
    assert rep.parts == 60 and len(list((tmp_path / "out" / "emb").glob("*.npy"))) == 60
    assert most[0] - base <= 16, f"{most[0] - base} files open at once"


def test_an_imported_set_beside_a_built_one_of_as_many_vectors_is_not_the_default(store, tmp_path):
    """After exporting a store and importing the export into it, both sets held as many vectors and
    the newest, the imported one, became the default: `search --image` and `anomalies --score` then
    failed (its encoder cannot be rebuilt), the latter advising --weights. Among equals the set built
    here is the default, and a command that must embed into an imported set says to pick another."""
    from conftest import copy_store

    work = copy_store(store, tmp_path / "w.h5")
    photos = store.parent / "photos"
    assert embed("export", work, "--out", tmp_path / "x").exit_code == 0
    r = embed("import", tmp_path / "x", "--store", work, "--json")
    assert r.exit_code == 0, r.output
    imported = json.loads(r.output)["vector_set"]
    r = embed("search", work, "--image", photos / "cat" / "cat_001.png", "-k", 2, "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["hits"][0]["id"] == "cat/cat_001.png" and d["vector_set"] != imported
    r = embed("anomalies", "--store", work, "--score", photos / "dog", "--json", "-q")
    assert r.exit_code == 0, r.output
    note = next(n for n in json.loads(r.output)["notes"] if n.startswith("using vector set"))
    assert f"built here, so new items can be embedded for it (the newest, {imported}, was imported)" in note
    r = embed("anomalies", "--store", work, "--set", imported, "--score", photos / "dog", "-q")
    assert r.exit_code == 2 and "imported from elsewhere" in r.output and "--set NAME" in r.output
    assert "--weights" not in r.output and r.output.count("\n") == 1, r.output


def _cut(path, keep) -> None:
    """Cut a file short: its first `keep` bytes (a fraction of its size when under 1)."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep) if keep < 1 else keep])


@pytest.mark.parametrize("fmt,part,keep,why", [
    ("npy", "emb/part-00002.npy", 0.9, "bytes where its header says"),  # the last part: the first two read well
    ("npy", "emb/part-00000.npy", 40, "truncated or unreadable"),  # cut inside its header
    ("npy", "emb/part-00001.npy", 0, "(an empty file)"),
    ("npy", "metadata/part-00002.parquet", 0.5, "truncated or unreadable"),
    ("parquet", "emb/part-00002.parquet", 0.5, "truncated or unreadable"),
    ("npy", "embedstore_export.json", 0.5, "truncated or unreadable"),
])
def test_import_of_a_file_cut_short_names_it_and_changes_no_store(store, tmp_path, fmt, part, keep, why):
    """An export copied in part (a vectors .npy cut short, a metadata or embedding parquet without its
    footer) gave "unexpected ValueError: mmap length is greater than file size" or "unexpected
    ArrowInvalid", exit 1, naming no file; and parts before the broken one were already committed.
    Every part's header is now read before the store is opened: one line naming the file and the fix,
    exit 2, and neither the store given nor a new one is written."""
    from conftest import copy_store

    src = tmp_path / "x"
    assert embed("export", store, "--format", fmt, "--out", src, "--part-rows", 8, "-q").exit_code == 0  # 21 rows: 3 parts
    _cut(src / part, keep)
    work = copy_store(store, tmp_path / "w.h5")

    def files():
        return {p: p.read_bytes() for p in sorted(tmp_path.glob("w.h5*/**/*")) + [work] if p.is_file()}

    before = files()
    for target in (work, tmp_path / "new.h5"):
        r = embed("import", src, "--store", target, "-q")
        assert r.exit_code == 2, (r.output, r.exception)
        line = f"error: {src / part} is truncated or unreadable ("
        assert r.output.startswith(line) and why in r.output and r.output.count("\n") == 1, r.output
        assert r.output.endswith("); export it again (`embed export STORE --out NEW_FOLDER`) and import the new folder\n"), r.output
    assert files() == before
    assert not (tmp_path / "new.h5").exists() and not (tmp_path / "new.h5.d").exists()


def test_an_import_into_a_store_says_it_added_items_and_an_imported_export_stays_external_once(store, tmp_path, build_tiny):
    """Importing 21 vectors into a store of other items added 21 items without a word; exporting an
    imported set and importing it again named the set external:external:test:tiny."""
    other = make_image_folder(tmp_path / "other", classes=("fox",), per_class=4, seed=5)
    build_tiny(other, tmp_path / "b.h5")
    assert embed("export", store, "--out", tmp_path / "x").exit_code == 0
    r = embed("import", tmp_path / "x", "--store", tmp_path / "b.h5", "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert any(n.startswith("21 imported id(s) were not items of b.h5: added to its item table") for n in rep["notes"]), rep["notes"]
    assert embed("export", tmp_path / "b.h5", "--set", rep["vector_set"], "--out", tmp_path / "y").exit_code == 0
    again = json.loads(embed("import", tmp_path / "y", "--store", tmp_path / "c.h5", "--json").stdout)
    info = json.loads(embed("info", tmp_path / "c.h5", "--json").stdout)
    assert [s["provenance"]["encoder"] for s in info["vector_sets"]] == ["external:test:tiny"]
    assert not any("were not items" in n for n in again["notes"])  # a new store: nothing to say
