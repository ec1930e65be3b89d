"""The same files through every door give the same vector and the same answer.

Doors: the build (the stored vector), `predict` (Python API and CLI, with --store keeping its
vectors), search by image (Python API, CLI and the server's POST /api/search), the server's
POST /api/predict, and anomalies scored on new files. Every one must go through the one embedding
service; a door with its own copy of preprocessing, normalisation or the float16 round trip
(the server once fed heads un-normalised vectors: "cat 0.66" where `embed predict` said "owl 0.998")
fails here. Ray's door is checked in test_ray.py against the same local build.

Runs at fp32 (EMBEDSTORE_CPU_BF16=0 makes `--precision auto` pick fp32 on every door alike)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import built_once, embed, make_image_folder

# its module-scoped stores are built once (scripts/test.sh: --dist loadgroup keeps the file on one worker)
pytestmark = pytest.mark.xdist_group("parity")

HEADS = ("logistic", "linear-svm", "ridge", "knn", "mlp")
QUERY_FILES = ("cat/cat_001.png", "dog/dog_002.jpg", "owl/owl_005.png", "owl/owl_000.jpg")
COS_MIN = 0.9999


@pytest.fixture(scope="module", params=[
    pytest.param(("test:tiny", {}), id="tiny"),
    pytest.param(("effnet-lite:lite0", {}), id="effnet-lite0", marks=pytest.mark.slow),
    pytest.param(("test:tiny", {"resize_mode": "squash", "interpolation": "bicubic"}), id="tiny-squash"),
])
def world(request, tmp_path_factory):
    """A store built from a labelled folder, one head of each kind, a server over it, and a
    folder of new files that are byte copies of some stored items."""
    from embedstore.ingest import build
    from embedstore.heads.fit import fit_head

    mp = pytest.MonkeyPatch()
    mp.setenv("EMBEDSTORE_CPU_BF16", "0")
    encoder, pp = request.param

    def make(root):
        photos = make_image_folder(root / "photos", classes=("cat", "dog", "owl"), per_class=10, size=(56, 44))
        build(photos, root / "s.h5", encoder=encoder, workers=0, progress=False, **pp)
        for kind in HEADS:
            fit_head(root / "s.h5", kind, out=root / f"head-{kind}", progress=False)
        for rel in QUERY_FILES:
            (root / "queries" / Path(rel).parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(photos / rel, root / "queries" / rel)

    key = "parity-" + "-".join([encoder.replace(":", "-")] + [f"{k}-{v}" for k, v in sorted(pp.items())])
    root = built_once(tmp_path_factory, key, make)
    yield root, {kind: root / f"head-{kind}" for kind in HEADS}, root / "queries"
    mp.undo()


def stored(store: Path, ids) -> np.ndarray:
    from embedstore.store import open_store

    with open_store(store) as st:
        rows = st.rows(st.select_set().name)
    pos = {str(i): k for k, i in enumerate(rows.ids)}
    return rows.load_at(np.array([pos[i] for i in ids]))


def cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def head_answers(head_dir: Path, X: np.ndarray):
    from embedstore.modelfile import load_head

    head, _ = load_head(head_dir)
    P = head.predict_proba(X)
    return [str(c) for c in head.classes_[P.argmax(1)]], P.max(1)


def test_predict_embeds_new_files_as_the_build_did(world):
    """`predict` with --store keeps the vectors it made: they equal the stored ones, and so do the
    labels and probabilities of every head kind."""
    import embedstore

    root, heads, queries = world
    ref = stored(root / "s.h5", QUERY_FILES)
    for kind, head in heads.items():
        keep = root / f"predict-{kind}.h5"
        rep = embedstore.predict(head, queries, store=keep, progress=False)
        assert (cos(stored(keep, QUERY_FILES), ref) >= COS_MIN).all(), kind
        want_label, want_p = head_answers(head, ref)
        got = {r["id"]: r for r in rep.rows}
        for i, f in enumerate(QUERY_FILES):
            assert got[f]["label"] == want_label[i], (kind, f)
            assert got[f]["prob"] == pytest.approx(want_p[i], abs=1e-4), (kind, f)


def test_cli_predict_gives_the_labels_and_probabilities_of_the_stored_vectors(world):
    root, heads, queries = world
    ref = stored(root / "s.h5", QUERY_FILES)
    for kind in ("logistic", "knn"):
        out = root / f"cli-{kind}.csv"
        r = embed("predict", heads[kind], queries, "--out", out, "--quiet")
        assert r.exit_code == 0, r.output
        rows = {row["id"]: row for row in csv.DictReader(out.open())}
        want_label, want_p = head_answers(heads[kind], ref)
        for i, f in enumerate(QUERY_FILES):
            assert rows[f]["label"] == want_label[i] and float(rows[f]["prob"]) == pytest.approx(want_p[i], abs=1e-4)


def test_search_by_image_embeds_the_query_as_the_build_did(world):
    from embedstore.search.query import SearchContext, search

    root, _, queries = world
    ref = stored(root / "s.h5", QUERY_FILES)
    ctx = SearchContext(root / "s.h5")
    for i, f in enumerate(QUERY_FILES):
        assert cos(ctx.vector_for_image(queries / f), ref[i])[0] >= COS_MIN, f
        rep = search(root / "s.h5", image=queries / f, k=3)
        assert rep.hits[0]["id"] == f and rep.hits[0]["score"] >= COS_MIN
    r = embed("search", root / "s.h5", "--image", queries / QUERY_FILES[0], "-k", 2, "--json")
    assert r.exit_code == 0, r.output
    assert f'"id": "{QUERY_FILES[0]}"' in r.output.split('"rank": 2')[0]


@pytest.mark.parametrize("kind", HEADS)
def test_server_predict_and_search_answer_as_the_cli_does(world, kind):
    """POST /api/predict gives the label and probability the head gives the stored vector (the
    defect this test exists for); POST /api/search finds the file itself at cosine 1."""
    from embedstore.serve.server import open_api

    root, heads, queries = world
    api = open_api(root / "s.h5", head=str(heads[kind]))
    ref = stored(root / "s.h5", QUERY_FILES)
    want_label, want_p = head_answers(heads[kind], ref)
    import embedstore

    cli_seen = {r["id"]: r["seen_in_training"] for r in embedstore.predict(heads[kind], queries, progress=False).rows}
    assert any(cli_seen.values())
    for i, f in enumerate(QUERY_FILES):
        body = (queries / f).read_bytes()
        r = api.handle("POST", "/api/predict", {}, {"content-type": "image/png"}, body)
        assert r.status == 200, r.body
        import json

        got = json.loads(r.body)
        assert got["label"] == want_label[i] and got["prob"] == pytest.approx(want_p[i], abs=1e-4), (kind, f, got)
        assert got["seen_in_training"] is cli_seen[f], (kind, f)  # the queries are byte copies of stored items
        r = api.handle("POST", "/api/search", {"k": ["2"]}, {"content-type": "image/png"}, body)
        hits = json.loads(r.body)["hits"]
        assert hits[0]["id"] == f and hits[0]["score"] >= COS_MIN


def test_anomalies_score_new_files_as_their_stored_vectors(world):
    from embedstore.detectors.anomalies import find_anomalies

    root, _, queries = world
    ref = stored(root / "s.h5", QUERY_FILES)
    rep, det = find_anomalies(root / "s.h5", "knn", fit_on="label=cat|dog", score=queries, progress=False)
    got = {r["id"]: (r["score"], r["in_fit_set"]) for r in rep.ranked}
    in_store = {r["id"]: (r["score"], r["in_fit_set"]) for r in find_anomalies(root / "s.h5", "knn", fit_on="label=cat|dog",
                                                                             progress=False)[0].ranked}
    want = -det.score_samples(ref)
    for i, f in enumerate(QUERY_FILES):
        if f.startswith("owl/"):  # not fitted on: scored by the detector, as its stored vector is
            assert got[f][0] == pytest.approx(want[i], rel=1e-4, abs=1e-5) and not got[f][1], f
        else:  # a byte copy of a fit item is that item: its held-out score, as ranking the store gives it
            assert got[f][0] == pytest.approx(in_store[f][0], rel=1e-6) and got[f][1] and in_store[f][1], f
            assert got[f][0] > want[i]  # not the in-sample score, which the item's own vector pulls down
    assert any("byte copies of fit items" in n for n in rep.notes)


def test_server_search_with_a_filter_answers_as_embed_search(world):
    """POST /api/search?where=... gives the hits `embed search --image F --where ...` gives: same ids,
    same order, same scores (the filter goes through the one search path)."""
    import json

    from embedstore.search.query import search
    from embedstore.serve.server import open_api

    root, _, queries = world
    api = open_api(root / "s.h5")
    for f in QUERY_FILES:
        for where in ("label=dog", "label=cat|owl"):
            want = search(root / "s.h5", image=queries / f, k=3, where=where).hits
            r = api.handle("POST", "/api/search", {"k": "3", "where": where}, {"content-type": "image/png"}, (queries / f).read_bytes())
            got = json.loads(r.body)["hits"]
            assert [h["id"] for h in got] == [h["id"] for h in want], (f, where)
            assert [h["score"] for h in got] == pytest.approx([h["score"] for h in want], abs=1e-5)
            assert {h["label"] for h in got} <= set(where.split("=")[1].split("|"))
    r = embed("search", root / "s.h5", "--image", queries / QUERY_FILES[1], "-k", 3, "--where", "label=owl", "--json")
    assert r.exit_code == 0, r.output
    cli_ids = [h["id"] for h in json.loads(r.output)["hits"]]
    body = (queries / QUERY_FILES[1]).read_bytes()
    got = api.handle("POST", "/api/search", {"k": "3", "where": "label=owl"}, {"content-type": "image/png"}, body).json()["hits"]
    assert [h["id"] for h in got] == cli_ids


def test_server_search_by_id_answers_as_embed_search(world):
    """GET /api/search?id= gives the hits of `embed search --id` (the item itself left out by both,
    kept by both with include_self), with and without a filter."""
    from embedstore.search.query import search
    from embedstore.serve.server import open_api

    root, _, _ = world
    api = open_api(root / "s.h5")
    for f in QUERY_FILES:
        for where in (None, "label=owl"):
            for include_self in (False, True):
                want = search(root / "s.h5", item_id=f, k=3, where=where, include_self=include_self).hits
                q = {"id": f, "k": "3", **({"where": where} if where else {}), **({"include_self": "1"} if include_self else {})}
                got = api.handle("GET", "/api/search", q).json()["hits"]
                assert [h["id"] for h in got] == [h["id"] for h in want], (f, where, include_self)


def test_python_api_search_and_recommend_stay_functions_after_their_packages_load(world):
    """`embedstore.search(...)` and `embedstore.recommend(...)` are callable whatever was imported
    before (Python binds a loaded subpackage to its parent's attribute: the functions once turned into
    the packages `embedstore.search` / `embedstore.recommend` as soon as anything loaded them), and
    give the CLI's hits; `import embedstore.search.index` still works. A fresh interpreter: this is
    about import order."""
    import json
    import subprocess
    import sys

    root, _, _ = world
    code = f"""
import inspect, json, embedstore
import embedstore.search.index as si, embedstore.recommend.engine
from embedstore import search, recommend
assert si.SearchIndex and 'item_id' in inspect.signature(embedstore.search).parameters
s = embedstore.search({str(root / 's.h5')!r}, item_id={QUERY_FILES[0]!r}, k=3)
r = recommend({str(root / 's.h5')!r}, like={QUERY_FILES[0]!r}, k=3)
print(json.dumps([[h["id"] for h in s.hits], [h["id"] for h in r.hits], search is embedstore.search, 'search' in dir(embedstore)]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    api_search, api_rec, same, listed = json.loads(out.stdout.splitlines()[-1])
    cli = json.loads(embed("search", root / "s.h5", "--id", QUERY_FILES[0], "-k", 3, "--json").output)["hits"]
    rec = json.loads(embed("recommend", root / "s.h5", "--like", QUERY_FILES[0], "-k", 3, "--json").output)["hits"]
    assert api_search == [h["id"] for h in cli] and api_rec == [h["id"] for h in rec] and same and listed


def test_server_predict_on_a_text_answers_as_the_cli_whatever_spaces_surround_it(tmp_path):
    """A text store: POST /api/predict with a training text (a trailing newline, as `curl
    --data-binary @file` sends it, or spaces around it) is the text the build stored: the same
    vector, label and probability as `embedstore.predict`, and seen_in_training true. The server
    hashed the raw body, so a trailing newline made a training text 'unseen'."""
    import json

    import embedstore
    from embedstore.heads.fit import fit_head
    from embedstore.ingest import build
    from embedstore.serve.server import open_api

    words = {"books": "novel chapter author plot", "food": "recipe oven flavour salt", "toys": "puzzle doll blocks game"}
    lines = ["text,label"] + [f"{w.split()[i % 4]} {w.split()[(i + 1) % 4]} item {i},{c}" for c, w in words.items() for i in range(12)]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    build(tmp_path / "t.csv", tmp_path / "t.h5", encoder="test:hash-text", progress=False)
    fit_head(tmp_path / "t.h5", "logistic", tmp_path / "head", progress=False)
    train_text = lines[1].rsplit(",", 1)[0]
    (tmp_path / "q.txt").write_text(train_text + "\n")
    cli = embedstore.predict(tmp_path / "head", tmp_path / "q.txt", progress=False).rows[0]
    assert cli["seen_in_training"] is True
    api = open_api(tmp_path / "t.h5", head=str(tmp_path / "head"))
    for body in (train_text, train_text + "\n", f"  {train_text} \r\n"):
        r = api.handle("POST", "/api/predict", {}, {"content-type": "text/plain; charset=utf-8"}, body.encode())
        assert r.status == 200, r.body
        got = json.loads(r.body)
        assert got["seen_in_training"] is True, repr(body)
        assert got["label"] == cli["label"] and got["prob"] == pytest.approx(cli["prob"], abs=1e-5), repr(body)


def test_predict_and_evaluate_score_a_labelled_file_alike_unknown_labels_included(tmp_path):
    """Labels the head has no class for are always wrong on both doors (predict dropped them and
    printed 1.0 where evaluate printed 0.71); blank labels are left out of both."""
    import json

    from embedstore.heads.fit import fit_head
    from embedstore.ingest import build

    words = {"books": "novel chapter author plot", "food": "recipe oven flavour salt"}
    rows = [f"{w.split()[i % 4]} {w.split()[(i + 1) % 4]} item {i},{c}" for c, w in words.items() for i in range(12)]
    (tmp_path / "t.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    build(tmp_path / "t.csv", tmp_path / "t.h5", encoder="test:hash-text", progress=False)
    fit_head(tmp_path / "t.h5", "logistic", tmp_path / "head", progress=False)
    hold = ["novel plot new one,books", "oven salt new two,food", "author chapter three,books", "doll puzzle,toys",
            "blocks game,toys", "unlabelled words,"]
    (tmp_path / "hold.csv").write_text("text,label\n" + "\n".join(hold) + "\n")
    p = embed("predict", tmp_path / "head", tmp_path / "hold.csv", "--json")
    assert p.exit_code == 0, p.output
    p = json.loads(p.output)
    build(tmp_path / "hold.csv", tmp_path / "hold.h5", encoder="test:hash-text", progress=False)
    e = embed("evaluate", tmp_path / "head", "--store", tmp_path / "hold.h5", "--json")
    assert e.exit_code == 0, e.output
    e = json.loads(e.output)
    assert p["judged"] == e["n"] == 5 and p["unseen_labels"] == {"toys": 2}
    assert p["accuracy"] == pytest.approx(e["accuracy"]) and p["accuracy"] <= 0.6
    r = embed("predict", tmp_path / "head", tmp_path / "hold.csv")
    assert "labels the head has no class for (counted, always wrong): toys (2)" in r.output, r.output


def test_an_id_is_the_same_item_through_every_door_as_stored_or_as_ls_prints_it(tmp_path):
    """A file name with a newline is listed by `embed ls` as `a\\nb.png`; one with a backslash and an
    n as `x\\\\ny.png`. Either form, and the stored id itself, names the same item through search
    (Python, CLI, the server, a batch of ids), the server's item route and recommend (Python, CLI,
    the server). The server and batch search once took only the stored form, and recommend only
    the printed one, so a literal backslash-n id was 'not in the store' there alone."""
    import json

    from conftest import write_image

    from embedstore import recommend, search
    from embedstore.ingest import build
    from embedstore.search.batch import search_batch
    from embedstore.serve.server import open_api

    photos = make_image_folder(tmp_path / "photos", classes=("cat", "dog"), per_class=4)
    write_image(photos / "cat" / "a\nb.png", (200, 60, 40), seed=7)
    write_image(photos / "cat" / "x\\ny.png", (40, 60, 200), seed=8)
    store = tmp_path / "s.h5"
    build(photos, store, encoder="test:tiny", workers=0, precision="fp32", progress=False)
    listed = embed("ls", store).output.splitlines()
    api = open_api(store)
    for stored, shown in (("cat/a\nb.png", "cat/a\\nb.png"), ("cat/x\\ny.png", "cat/x\\\\ny.png")):
        assert shown in listed and stored not in listed
        want = [h["id"] for h in search(store, item_id=stored, k=3).hits]
        liked = [h["id"] for h in recommend(store, stored.replace(",", "\\,"), k=3).hits]
        assert stored not in want and stored not in liked
        assert api.handle("GET", "/api/items/" + shown).status == 200, shown  # (a URL carries no raw newline)
        for form in (stored, shown):
            assert [h["id"] for h in search(store, item_id=form, k=3).hits] == want, form
            r = embed("search", store, "--id", form, "-k", 3, "--json")
            assert r.exit_code == 0 and [h["id"] for h in json.loads(r.output)["hits"]] == want, (form, r.output)
            r = api.handle("GET", "/api/search", {"id": form, "k": "3"})
            assert r.status == 200 and [h["id"] for h in json.loads(r.body)["hits"]] == want, (form, r.body)
            with open(tmp_path / "q.csv", "w", newline="") as f:
                csv.writer(f).writerows([["id"], [form]])
            search_batch(store, tmp_path / "q.csv", tmp_path / "o.csv", k=3, progress=False)
            with open(tmp_path / "o.csv", newline="") as f:
                assert [row["id"] for row in csv.DictReader(f)] == want, form
            assert [h["id"] for h in recommend(store, form, k=3).hits] == liked, form
            r = embed("recommend", store, "--like", form, "-k", 3, "--json")
            assert r.exit_code == 0 and [h["id"] for h in json.loads(r.output)["hits"]] == liked, (form, r.output)
            r = api.handle("GET", "/api/recommend", {"like": form, "k": "3"})
            assert r.status == 200 and [h["id"] for h in json.loads(r.body)["hits"]] == liked, (form, r.body)
    assert api.handle("GET", "/api/search", {"id": "cat/nothing.png", "k": "3"}).status == 404


def test_the_server_counts_what_it_serves_as_embed_info_counts_that_set(tmp_path):
    """/api/info's `vectors` and label counts are the served set's rows, which `embed info --json`
    gives as that set's count; its `items` count the store's items, quarantined ones too (the
    server once called its row count `items`: 6 against the CLI's 10)."""
    import json

    from conftest import add_bad_files

    from embedstore.ingest import build
    from embedstore.serve.server import open_api

    photos = make_image_folder(tmp_path / "photos", classes=("cat", "dog"), per_class=3)
    add_bad_files(photos)
    build(photos, tmp_path / "s.h5", encoder="test:tiny", workers=0, precision="fp32", progress=False)
    cli = json.loads(embed("info", tmp_path / "s.h5", "--json").output)
    got = json.loads(open_api(tmp_path / "s.h5").handle("GET", "/api/info").body)
    served = next(s for s in cli["vector_sets"] if s["name"] == got["vector_set"])
    assert cli["items"] > cli["ok"] == served["count"] == got["vectors"] == 6 and "items" not in got
    assert got["labels"] == cli["labels"] == {"cat": 3, "dog": 3}


def test_a_server_with_a_head_says_when_it_serves_another_set_than_embed_search_picks(tmp_path):
    """With --head (and no --set) the server serves the set the head was fitted on; where that is
    not the set `embed search` picks by default, /api/info and the start-up line say so with the
    --set that makes the CLI answer the same, and with it both give the same hits."""
    import json

    from embedstore.heads.fit import fit_head
    from embedstore.ingest import build
    from embedstore.serve.server import open_api
    from embedstore.store import open_store

    photos = make_image_folder(tmp_path / "photos", classes=("cat", "dog"), per_class=4)
    store = tmp_path / "m.h5"
    build(photos, store, encoder="test:tiny", workers=0, precision="fp32", progress=False)
    build(photos, store, encoder="test:tiny", normalize="none", workers=0, precision="fp32", progress=False)
    with open_store(store) as st:
        default = st.select_set(None).name
        other = next(v.name for v in st.vector_sets() if v.name != default)
    fit_head(store, "logistic", out=tmp_path / "head", vector_set=other, progress=False)
    api = open_api(store, head=str(tmp_path / "head"))
    info = json.loads(api.handle("GET", "/api/info").body)
    assert info["vector_set"] == other and f"picks {default} unless given --set {other}" in info["vector_set_note"]
    served = json.loads(api.handle("GET", "/api/search", {"id": "cat/cat_001.png", "k": "3"}).body)
    r = embed("search", store, "--id", "cat/cat_001.png", "-k", 3, "--set", other, "--json")
    cli = json.loads(r.output)
    assert served["vector_set"] == cli["vector_set"] == other
    assert [h["id"] for h in served["hits"]] == [h["id"] for h in cli["hits"]]
    assert [h["score"] for h in served["hits"]] == pytest.approx([h["score"] for h in cli["hits"]], abs=1e-6)
    plain = json.loads(open_api(store).handle("GET", "/api/info").body)  # no head: the default, nothing to say
    assert plain["vector_set"] == default and plain["vector_set_note"] is None


def test_the_embedding_service_gives_what_the_store_reads_back(tmp_path, build_tiny):
    """The service (server predict and search uploads, zero-shot, queries) returned the float16 round
    trip of length 1.0002 while the store's reader returns unit rows: the same photo was two vectors
    depending on the door. It is one vector, to float32 precision."""
    from conftest import make_image_folder
    from embedstore.embedding.service import EmbeddingService
    from embedstore.store import open_store

    src = make_image_folder(tmp_path / "photos", per_class=3)
    build_tiny(src, tmp_path / "s.h5", accel="none")
    with open_store(tmp_path / "s.h5") as st:
        vs = st.select_set()
        rows = st.rows(vs.name)
        ids = list(rows.ids)
        stored = rows.fetch(np.arange(len(ids)))
    svc = EmbeddingService.from_provenance(vs.provenance, device="cpu")
    got = np.concatenate([svc.embed_image_file(str(src / i)) for i in ids])
    assert np.abs(np.linalg.norm(got, axis=1) - 1).max() < 1e-6
    assert np.abs(got - stored).max() < 1e-6
