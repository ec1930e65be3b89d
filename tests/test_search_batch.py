"""Batch search (`embed search --queries`) and the k-NN graph (`embed neighbors`)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from conftest import embed, make_image_folder, write_image


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from embedstore.ingest import build

    root = tmp_path_factory.mktemp("batch")
    make_image_folder(root / "photos", classes=("cat", "dog", "owl"), per_class=8)
    build(root / "photos", root / "s.h5", encoder="test:tiny", workers=0, precision="fp32", progress=False)
    return root / "s.h5"


def read_table(path):
    if str(path).endswith(".csv"):
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def one(store, item_id, k):
    r = embed("search", store, "--id", item_id, "-k", k, "--json")
    assert r.exit_code == 0, r.output
    return [h["id"] for h in json.loads(r.output)["hits"]]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_queries_by_id_give_what_one_query_at_a_time_gives(store, tmp_path, fmt):
    ids = ["cat/cat_001.png", "dog/dog_004.jpg", "owl/owl_007.png"]
    (tmp_path / "q.csv").write_text("id,note\n" + "".join(f"{i},x\n" for i in ids))
    r = embed("search", store, "--queries", tmp_path / "q.csv", "--out", tmp_path / f"h.{fmt}", "-k", 4, "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["queries"] == 3 and rep["rows_written"] == 12 and rep["kind"] == "id"
    rows = read_table(tmp_path / f"h.{fmt}")
    assert list(rows[0]) == ["query", "rank", "id", "score", "label"]
    for q in ids:
        got = [x["id"] for x in rows if x["query"] == q]
        assert got == one(store, q, 4) and q not in got
        assert [int(x["rank"]) for x in rows if x["query"] == q] == [1, 2, 3, 4]
    r = embed("search", store, "--queries", tmp_path / "q.csv", "--out", tmp_path / "s.csv", "-k", 2, "--include-self", "--json")
    assert [x["id"] for x in read_table(tmp_path / "s.csv")][::2] == ids


def test_queries_from_a_npy_of_vectors_answer_every_row(store, tmp_path):
    from embedstore.store import open_store

    with open_store(store) as st:
        rows = st.rows(st.select_set().name)
        X = rows.load()
    np.save(tmp_path / "q.npy", X[[3, 17, 22]])
    r = embed("search", store, "--queries", tmp_path / "q.npy", "--out", tmp_path / "h.csv", "-k", 2, "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["kind"] == "vector" and rep["queries"] == 3 and rep["rows_written"] == 6
    got = {x["query"]: x["id"] for x in read_table(tmp_path / "h.csv") if x["rank"] == "1"}
    assert got == {"0": rows.ids[3], "1": rows.ids[17], "2": rows.ids[22]}
    np.save(tmp_path / "short.npy", X[:2, :5])
    r = embed("search", store, "--queries", tmp_path / "short.npy", "--out", tmp_path / "o.csv")
    assert r.exit_code == 2 and "--queries" in r.output and "values per vector" in r.output, r.output
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    r = embed("search", store, "--queries", tmp_path / "junk.npy", "--out", tmp_path / "o.csv")
    assert r.exit_code == 2 and "cannot be read as a numpy array" in r.output, r.output


def test_queries_from_a_folder_of_images_skip_what_is_not_an_image(store, tmp_path):
    q = tmp_path / "qs"
    photos = store.parent / "photos"
    for f in ("cat/cat_000.jpg", "owl/owl_002.jpg"):
        (q / f).parent.mkdir(parents=True, exist_ok=True)
        (q / f).write_bytes((photos / f).read_bytes())
    (q / "notes.txt").write_text("not an image")
    r = embed("search", store, "--queries", q, "--out", tmp_path / "h.parquet", "-k", 3, "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["queries"] == 2 and rep["kind"] == "image" and [s["query"] for s in rep["skipped"]] == ["notes.txt"]
    rows = read_table(tmp_path / "h.parquet")
    assert {x["query"]: x["id"] for x in rows if x["rank"] == 1} == {"cat/cat_000.jpg": "cat/cat_000.jpg", "owl/owl_002.jpg": "owl/owl_002.jpg"}
    # the queries are encoded in one batch: the same hits and scores as one `search --image` each
    for f in ("cat/cat_000.jpg", "owl/owl_002.jpg"):
        one = json.loads(embed("search", store, "--image", q / f, "-k", 3, "--json").stdout)["hits"]
        mine = sorted((x for x in rows if x["query"] == f), key=lambda x: int(x["rank"]))
        assert [x["id"] for x in mine] == [h["id"] for h in one]
        assert np.allclose([float(x["score"]) for x in mine], [h["score"] for h in one], atol=1e-4)


def test_batch_search_errors(store, tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n")
    (tmp_path / "bad.csv").write_text("id\ncat/cat_000.jpg\ncat/nope.jpg\n")
    (tmp_path / "noid.csv").write_text("name\nx\n")
    (tmp_path / "t.txt").write_text("a cat\n")
    (tmp_path / "bad.txt").write_bytes(b"a cat\n\xff\xfe a dog\n")
    (tmp_path / "q.csv").write_text("id\ncat/cat_000.jpg\n")
    (tmp_path / "texts.csv").write_text("text\na cat\n")
    cases = [
        ([tmp_path / "missing.h5", "--queries", tmp_path / "q.csv", "--out", tmp_path / "o.csv"], "does not exist"),
        ([store, "--queries", tmp_path / "empty.txt", "--out", tmp_path / "o.csv"], "holds no queries"),
        ([store, "--queries", tmp_path / "nothing", "--out", tmp_path / "o.csv"], "does not exist"),
        ([store, "--queries", tmp_path / "bad.csv", "--out", tmp_path / "o.csv"], "cat/nope.jpg"),
        ([store, "--queries", tmp_path / "noid.csv", "--out", tmp_path / "o.csv"], "no 'id' column"),
        ([store, "--queries", tmp_path / "texts.csv", "--out", tmp_path / "o.csv"], "text queries go in a .txt file, one a line"),
        ([store, "--queries", tmp_path / "t.txt", "--out", tmp_path / "o.csv"], "CLIP encoder"),
        ([store, "--queries", tmp_path / "bad.txt", "--out", tmp_path / "o.csv"], "bad.txt line 2: not valid UTF-8"),
        ([store, "--queries", tmp_path / "q.csv", "--out", tmp_path / "o.csv", "--where", "colour=red"], "unknown filter key"),
        ([store, "--queries", tmp_path / "q.csv", "--out", tmp_path / "o.txt"], ".csv or a .parquet"),
        ([store, "--queries", tmp_path / "q.csv"], "go together"),
        ([store, "--queries", tmp_path / "q.csv", "--out", tmp_path / "o.csv", "--id", "x"], "not both"),
    ]
    for args, message in cases:
        r = embed("search", *args)
        assert r.exit_code == 2, (args, r.output)
        assert message in r.output, (args, r.output)
        assert len([x for x in r.output.strip().splitlines() if x.startswith("error")]) == 1
    assert not (tmp_path / "o.csv").exists()


def test_neighbors_is_every_items_exact_knn_without_itself(store, tmp_path):
    from embedstore.store import open_store

    with open_store(store) as st:
        rows = st.rows(st.select_set().name)
        X = rows.load()
    S = (X / np.linalg.norm(X, axis=1, keepdims=True)) @ X.T  # queries normalised, stored vectors as stored
    np.fill_diagonal(S, -np.inf)
    truth = np.argsort(-S, axis=1)[:, :3]
    import embedstore.search.batch as batch

    r = embed("neighbors", store, "-k", 3, "--out", tmp_path / "n.csv", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["rows_written"] == 3 * len(X)
    got = read_table(tmp_path / "n.csv")
    by_q = {}
    for x in got:
        by_q.setdefault(x["query"], []).append((x["id"], float(x["score"])))
    pos = {i: n for n, i in enumerate(rows.ids)}
    for i, q in enumerate(rows.ids):
        assert q not in [h for h, _ in by_q[q]]
        assert np.allclose([sc for _, sc in by_q[q]], S[i, truth[i]], atol=1e-5)  # the true top 3 (ties either way)
        assert np.allclose([S[i, pos[h]] for h, _ in by_q[q]], [sc for _, sc in by_q[q]], atol=1e-5)
    # streaming in small batches gives the same graph
    rep = batch.neighbors(store, tmp_path / "n2.csv", k=3, batch=5, progress=False)
    assert rep.rows_written == 3 * len(X) and read_table(tmp_path / "n2.csv") == got
    r = embed("neighbors", store, "-k", 2, "--where", "label=owl", "--out", tmp_path / "o.parquet", "--json")
    owl = read_table(tmp_path / "o.parquet")
    assert len(owl) == 16 and all(x["label"] == "owl" and x["query"].startswith("owl/") for x in owl)


def test_neighbors_errors(store, tmp_path):
    cases = [
        ([tmp_path / "missing.h5", "--out", tmp_path / "n.csv"], "does not exist"),
        ([store, "--out", tmp_path / "n.csv", "--where", "label"], "key=value"),
        ([store, "--out", tmp_path / "n.csv", "-k", 24], "larger than the 23"),
        ([store, "--out", tmp_path / "n.csv", "--where", "label=emu"], "matches no items"),
        ([store, "--out", tmp_path / "n.json"], ".csv or a .parquet"),
    ]
    for args, message in cases:
        r = embed("neighbors", *args)
        assert r.exit_code == 2, (args, r.output)
        assert message in r.output, (args, r.output)
    r = embed("neighbors", "--help")
    assert r.exit_code == 0 and "embed neighbors photos.h5" in r.output


def test_every_door_that_picks_one_of_several_vector_sets_says_which(tmp_path):
    """A store with two vector sets: search by id said which it used ("the newest of 2"); batch
    search, neighbors and recommend (one list, a file of users, evaluate) picked the same one without
    a word, in text and --json."""
    src = make_image_folder(tmp_path / "src", per_class=4)
    for norm in ("none", "l2"):  # two sets of one encoder: l2 is the newest
        assert embed("build", src, "--store", tmp_path / "s.h5", "--encoder", "test:tiny", "--precision", "fp32",
                     "--normalize", norm, "-q").exit_code == 0
    (tmp_path / "ids.csv").write_text("id\ncat/cat_000.jpg\n")
    (tmp_path / "inter.csv").write_text("user,item\n" + "".join(f"u{u},{c}/{c}_00{i}{'.jpg' if i % 2 == 0 else '.png'}\n" for u, c in enumerate(("cat", "dog"))
                                                               for i in range(3)))
    doors = {"search": ["search", "--id", "cat/cat_000.jpg", "-k", "2"],
             "search --queries": ["search", "--queries", tmp_path / "ids.csv", "--out", tmp_path / "q.csv", "-k", "2"],
             "neighbors": ["neighbors", "--out", tmp_path / "n.csv", "-k", "2"],
             "recommend": ["recommend", "--like", "cat/cat_000.jpg", "-k", "2"],
             "recommend --interactions": ["recommend", "--interactions", tmp_path / "inter.csv", "--out", tmp_path / "r.csv", "-k", "2"],
             "recommend --evaluate": ["recommend", "--evaluate", tmp_path / "inter.csv", "-k", "2"]}
    for door, args in doors.items():
        args = [args[0], tmp_path / "s.h5", *args[1:]]
        text = embed(*args, "-q" if door != "search" else "--exact")
        assert text.exit_code == 0, (door, text.output)
        said = [line.strip() for line in text.output.splitlines() if "newest of 2" in line]
        assert len(said) == 1 and said[0].startswith("note: using vector set"), (door, text.output)
        d = json.loads(embed(*args, "--json").stdout)
        notes = [d["note"]] if door == "search" else d["notes"]
        assert said[0].removeprefix("note: ") in notes, (door, d)


def test_empty_lines_of_a_text_query_file_are_listed_as_skipped(tmp_path):
    """A .txt of queries with blank lines reported "2 text queries" and said nothing of the others
    (one --text "   " is refused): they are listed as skipped, by line, as unreadable images are."""
    from embedstore.ingest import build

    (tmp_path / "t.txt").write_text("a red boat\nthe green tree\nan old chair\n")
    build(tmp_path / "t.txt", tmp_path / "t.h5", encoder="test:hash-text", progress=False)
    (tmp_path / "q.txt").write_text("ok text\n\n   \nanother\n")
    r = embed("search", tmp_path / "t.h5", "--queries", tmp_path / "q.txt", "--out", tmp_path / "o.csv", "-k", "1", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["queries"] == 2 and [s["query"] for s in d["skipped"]] == ["q.txt#L2", "q.txt#L3"], d["skipped"]
    text = embed("search", tmp_path / "t.h5", "--queries", tmp_path / "q.txt", "--out", tmp_path / "o2.csv", "-k", "1").output
    assert "skipped q.txt#L2: empty line" in text, text
