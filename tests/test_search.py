"""`embed search` and the store's index choice: exact below a size, tuned IVF above it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import copy_store, embed, make_image_folder




@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from embedstore.ingest import build

    root = tmp_path_factory.mktemp("search")
    make_image_folder(root / "photos", classes=("cat", "dog", "owl"), per_class=10)
    build(root / "photos", root / "s.h5", encoder="test:tiny", workers=0, precision="fp32", progress=False)
    return root / "s.h5"


def hits(r):
    assert r.exit_code == 0, r.output
    return json.loads(r.output)["hits"]


def test_search_by_id_leaves_the_item_out_unless_include_self(store):
    h = hits(embed("search", store, "--id", "dog/dog_003.png", "-k", 5, "--json"))
    assert len(h) == 5 and "dog/dog_003.png" not in [x["id"] for x in h]
    assert [x["rank"] for x in h] == [1, 2, 3, 4, 5]
    h2 = hits(embed("search", store, "--id", "dog/dog_003.png", "-k", 5, "--include-self", "--json"))
    assert h2[0]["id"] == "dog/dog_003.png" and h2[0]["score"] == pytest.approx(1.0, abs=1e-3)
    assert [x["id"] for x in h2[1:]] == [x["id"] for x in h[:4]]
    assert all(a["score"] >= b["score"] for a, b in zip(h, h[1:]))
    img = store.parent / "photos" / "owl" / "owl_004.jpg"
    h = hits(embed("search", store, "--image", img, "-k", 3, "--json"))
    assert h[0]["id"] == "owl/owl_004.jpg" and h[0]["uri"] == str(img)


def test_where_filters_and_exact_agree(store):
    h = hits(embed("search", store, "--id", "cat/cat_000.jpg", "-k", 4, "--where", "label=dog|owl", "--json"))
    assert len(h) == 4 and all(x["label"] in ("dog", "owl") for x in h)
    a = hits(embed("search", store, "--id", "cat/cat_001.png", "-k", 6, "--json"))
    b = hits(embed("search", store, "--id", "cat/cat_001.png", "-k", 6, "--exact", "--json"))
    assert [x["id"] for x in a] == [x["id"] for x in b]


def test_search_by_vector_file(store, tmp_path):
    from embedstore.store import open_store

    with open_store(store) as st:
        rows = st.rows(st.select_set().name)
        X = rows.load()
    np.save(tmp_path / "q.npy", X[7])
    h = hits(embed("search", store, "--vector-file", tmp_path / "q.npy", "-k", 1, "--json"))
    assert h[0]["id"] == rows.ids[7]
    np.save(tmp_path / "bad.npy", X[7][:5])
    r = embed("search", store, "--vector-file", tmp_path / "bad.npy")
    assert r.exit_code == 2 and "values per vector" in r.output
    # several rows: refused, never answered for the first row alone
    np.save(tmp_path / "two.npy", X[[7, 20]])
    (tmp_path / "two.txt").write_text("\n".join(",".join(map(str, x)) for x in X[[7, 20]]))
    for f in ("two.npy", "two.txt"):
        r = embed("search", store, "--vector-file", tmp_path / f, "-k", 1)
        assert r.exit_code == 2 and "holds 2 vectors; it takes one" in r.output and "--queries" in r.output, r.output


def test_search_errors(store, tmp_path):
    cases = [
        ([], "exactly one query"),
        (["--id", "cat/cat_000.jpg", "--text", "a cat"], "exactly one query"),
        (["--id", "cat/cat_999.jpg"], "no item with id"),
        (["--id", "cat/cat_000.jpg", "-k", 31], "larger than the 29 item(s) there are to search (the query item itself left out); use -k 29 or less"),
        (["--id", "cat/cat_000.jpg", "-k", 30], "larger than the 29"),
        (["--id", "cat/cat_000.jpg", "-k", 10, "--where", "label=cat"], "larger than the 9"),
        (["--id", "cat/cat_000.jpg", "-k", 3, "--where", "colour=red"], "unknown filter key 'colour'"),
        (["--id", "cat/cat_000.jpg", "-k", 3, "--where", "label"], "must look like key=value"),
        (["--id", "cat/cat_000.jpg", "--where", "label=emu"], "matches no items"),
        (["--text", "a photo of a cat"], "CLIP encoder"),
        (["--image", tmp_path / "missing.jpg"], "does not exist"),
        (["--text", "   "], "the text query is empty"),
        (["--vector-file", tmp_path / "words.npy"], "holds <U1 values, not real numbers"),
        (["--vector-file", tmp_path / "zero.npy"], "vector 0 is all zeros"),
    ]
    from embedstore.store import open_store

    np.save(tmp_path / "words.npy", np.array(["a", "b"]))
    with open_store(store) as st:
        np.save(tmp_path / "zero.npy", np.zeros((1, st.select_set().dim), np.float32))
    for extra, message in cases:
        r = embed("search", store, *extra)
        assert r.exit_code == 2, (extra, r.output)
        assert message in r.output, (extra, r.output)


def test_a_missing_query_image_is_said_before_the_encoder_loads(store, tmp_path, monkeypatch):
    from embedstore.search import query

    def no_encoder(self):
        raise AssertionError("the encoder was loaded for a query image that does not exist")

    monkeypatch.setattr(query.SearchContext, "service", no_encoder)
    r = embed("search", store, "--image", tmp_path / "missing.jpg")
    assert r.exit_code == 2 and "does not exist" in r.output, r.output
    r = embed("search", store, "--image", tmp_path)
    assert r.exit_code == 2 and "is a folder: give one image file, or a folder with --queries" in r.output, r.output


def test_a_set_with_no_rows_left_says_so(tmp_path):
    """Every file changed and was embedded again into a second set: the first set has no live rows.
    Searching it says so, and why, in one line (it said `--where None matches no items`)."""
    from embedstore.ingest import build

    opts = dict(encoder="test:tiny", workers=0, precision="fp32", progress=False)
    photos = make_image_folder(tmp_path / "photos", per_class=3)
    store = tmp_path / "s.h5"
    first = build(photos, store, **opts).vector_set
    make_image_folder(photos, per_class=3, seed=1)  # new content under the same ids
    build(photos, store, normalize="none", **opts)
    sets = {v["name"]: v for v in json.loads(embed("info", store, "--json").output)["vector_sets"]}
    assert sets[first]["count"] == 0 and sets[first]["stale_rows"] == 6
    np.save(tmp_path / "q.npy", np.ones((1, int(sets[first]["provenance"]["dim"])), np.float32))
    for query in (["--vector-file", tmp_path / "q.npy"], ["--queries", tmp_path / "q.npy", "--out", tmp_path / "h.csv"]):
        r = embed("search", store, "--set", first, *query)
        assert r.exit_code == 2, r.output
        line = [x for x in r.output.splitlines() if x.startswith("error:")]
        assert len(line) == 1 and f"vector set {first} has no items to search (6 superseded row(s)" in line[0], r.output
        assert "--where" not in line[0]


def test_image_query_when_the_encoders_weights_are_unavailable(store, tmp_path):
    """A store made by a hub encoder whose weights are not here: one line, fast, with the fix."""
    import h5py

    copy_store(store, tmp_path / "s.h5")
    with h5py.File(tmp_path / "s.h5", "r+") as f:
        g = f["vectors"][list(f["vectors"])[0]]
        g.attrs["encoder"] = "torchvision:resnet18"
    img = store.parent / "photos" / "owl" / "owl_004.jpg"
    r = embed("search", tmp_path / "s.h5", "--image", img)
    assert r.exit_code == 2, r.output
    assert "torchvision:resnet18" in r.output and "--weights" in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_large_sets_get_a_tuned_ivf_index(tmp_path, monkeypatch):
    """Above the exact threshold: IVF whose nprobe reaches recall@10 >= 0.95 on held-out queries."""
    from embedstore.search.searcher import exact_search, index_search, normalise
    from embedstore.store.index import load_index, update_index

    monkeypatch.setenv("EMBEDSTORE_EXACT_MAX", "1000")
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(40, 32))
    X = normalise(centers[rng.integers(0, 40, 6000)] + 0.6 * rng.normal(size=(6000, 32)))
    ids = [f"i{i}" for i in range(len(X))]

    def read_rows(a, b):
        for s in range(a, b, 1000):
            yield X[s : min(b, s + 1000)]

    meta = update_index(tmp_path, "set", ids, 32, "inner_product", read_rows)
    assert meta["type"] == "IVFFlat" and not meta["exact"]
    assert meta["recall_at_10"] >= 0.95 and meta["params"]["nprobe"] >= 1
    index, meta2 = load_index(tmp_path, "set", ids)
    assert meta2 == meta
    Q = X[rng.choice(len(X), 200, replace=False)]
    _, approx = index_search(index, Q, 10)
    _, exact = exact_search(Q, lambda: ((np.arange(s, min(6000, s + 1000)), X[s : s + 1000]) for s in range(0, 6000, 1000)), 10, True)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(approx, exact)])
    assert recall >= 0.9
    with pytest.raises(Exception, match="does not match"):
        load_index(tmp_path, "set", ids[:-1])


def test_a_new_ivf_index_is_filled_list_by_list_as_faiss_add_would_fill_it():
    """`_fill_lists_exactly` (each inverted list allocated once at its final size) gives the index
    `index.add` gives chunk by chunk: the same rows in the same lists in the same order, the same
    vectors, the same search results."""
    import faiss

    from embedstore.search.searcher import normalise
    from embedstore.store.index import _fill_lists_exactly

    rng = np.random.default_rng(3)
    X = normalise(rng.normal(size=(5000, 16))).astype(np.float32)

    def read_rows(a, b):
        for s in range(a, b, 700):  # chunks that do not divide the rows or the lists evenly
            yield X[s : min(b, s + 700)]

    ref = faiss.index_factory(16, "IVF50,Flat", faiss.METRIC_INNER_PRODUCT)
    ref.train(X[:2500])
    ours = faiss.clone_index(ref)
    for chunk in read_rows(0, len(X)):
        ref.add(chunk)
    _fill_lists_exactly(ours, len(X), read_rows)
    assert ours.ntotal == ref.ntotal == len(X)
    a, b = (faiss.downcast_InvertedLists(faiss.extract_index_ivf(i).invlists) for i in (ref, ours))
    for lst in range(50):
        n = a.list_size(lst)
        assert b.list_size(lst) == n
        assert np.array_equal(faiss.rev_swig_ptr(a.get_ids(lst), n), faiss.rev_swig_ptr(b.get_ids(lst), n))
        assert np.array_equal(faiss.rev_swig_ptr(a.get_codes(lst), n * 64), faiss.rev_swig_ptr(b.get_codes(lst), n * 64))
    ref.nprobe = ours.nprobe = 8
    D1, I1 = ref.search(X[:100], 10)
    D2, I2 = ours.search(X[:100], 10)
    assert np.array_equal(I1, I2) and np.array_equal(D1, D2)


def test_float16_sets_keep_float16_vectors_in_their_ivf_lists(tmp_path, monkeypatch):
    """A set stored as float16 gets IVF lists of float16 vectors (IVF-SQfp16 without residuals):
    the same values the store holds, so the same hits as IVF-Flat, in half the bytes; scores equal up
    to float32 rounding (bit-equal here, at a dimension FAISS sums in the same order for both)."""
    from embedstore.search.searcher import index_search, normalise
    from embedstore.store.index import load_index, update_index

    monkeypatch.setenv("EMBEDSTORE_EXACT_MAX", "1000")
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(30, 32))
    X = normalise(centers[rng.integers(0, 30, 5000)] + 0.6 * rng.normal(size=(5000, 32))).astype(np.float16).astype(np.float32)
    ids = [f"i{i}" for i in range(len(X))]

    def read_rows(a, b):
        for s in range(a, b, 900):
            yield X[s : min(b, s + 900)]

    metas = {fp16: update_index(tmp_path / str(fp16), "set", ids, 32, "inner_product", read_rows, fp16=fp16) for fp16 in (False, True)}
    assert metas[False]["type"] == "IVFFlat" and metas[True]["type"] == "IVFSQfp16"
    assert metas[True]["params"] == metas[False]["params"] and metas[True]["recall_at_10"] == metas[False]["recall_at_10"]
    assert metas[True]["size"] < 0.6 * metas[False]["size"]
    Q = X[rng.choice(len(X), 200, replace=False)]
    (D0, I0), (D1, I1) = (index_search(load_index(tmp_path / str(fp16), "set", ids)[0], Q, 10) for fp16 in (False, True))
    assert np.array_equal(I0, I1) and np.array_equal(D0, D1)


def test_a_vector_too_large_for_faiss_is_refused_in_one_line_not_left_out_of_the_index():
    """A finite vector whose distances overflow gets no list from FAISS's quantizer (`index.add`
    would leave it out silently): the index builder says which row and what to do."""
    import faiss

    from embedstore.errors import StoreError
    from embedstore.store.index import _fill_lists_exactly

    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 8)).astype(np.float32)
    index = faiss.index_factory(8, "IVF16,Flat", faiss.METRIC_L2)
    index.train(X)
    X[7] = 3e19
    with pytest.raises(StoreError, match=r"1 row\(s\) of this vector set, e.g. row 7, have vectors too large") as e:
        _fill_lists_exactly(index, len(X), lambda a, b: iter([X[a:b]]))
    assert "\n" not in str(e.value) and "--normalize l2" in str(e.value)


def test_ivfpq_search_reranks_candidates_by_the_stored_vectors(tmp_path, monkeypatch):
    """Above EMBEDSTORE_PQ_MIN rows the index holds PQ codes; search re-ranks k x 10 candidates by
    the stored vectors, so results agree with exact search and scores are exact cosines."""
    from conftest import synthetic_store

    monkeypatch.setenv("EMBEDSTORE_EXACT_MAX", "500")
    monkeypatch.setenv("EMBEDSTORE_PQ_MIN", "1000")
    store = tmp_path / "pq.h5"
    synthetic_store(store, 4000, 32, shards=3)
    from embedstore.store import open_store

    with open_store(store, mode="a") as st:
        st.refresh(index=True)
    info = json.loads(embed("info", store, "--json").output)
    idx = info["vector_sets"][0]["index"]
    assert idx["type"] == "IVFPQ" and idx["params"]["rerank"] == 10 and idx["params"]["pq_m"] == 8
    assert idx["recall_at_10"] >= 0.9, idx
    overlap = []
    for i in range(0, 4000, 400):
        a = hits(embed("search", store, "--id", f"v{i:06d}", "-k", 10, "--include-self", "--json"))
        b = hits(embed("search", store, "--id", f"v{i:06d}", "-k", 10, "--include-self", "--exact", "--json"))
        overlap.append(len({h["id"] for h in a} & {h["id"] for h in b}) / 10)
        assert a[0]["id"] == f"v{i:06d}" and abs(a[0]["score"] - b[0]["score"]) < 1e-5
    assert np.mean(overlap) >= 0.9, overlap


@pytest.mark.slow
def test_text_search_uses_the_same_clip_models_text_tower(tmp_path):
    """Random-weight CLIP (no weights download here): scores equal the model's own text-image products."""
    import open_clip
    import torch

    from embedstore.ingest import build
    from embedstore.store import open_store

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-S-32", pretrained=None).eval()
    torch.save(model.state_dict(), tmp_path / "clip.pt")
    make_image_folder(tmp_path / "photos", classes=("cat", "dog"), per_class=3)
    build(tmp_path / "photos", tmp_path / "c.h5", encoder="open_clip:ViT-S-32", weights=str(tmp_path / "clip.pt"),
          workers=0, precision="fp32", progress=False, accel="none")  # eager: converting the image tower is not the subject
    r = embed("search", tmp_path / "c.h5", "--text", "a photo of a cat", "-k", 6, "--weights", tmp_path / "clip.pt", "--json")
    h = hits(r)
    with open_store(tmp_path / "c.h5") as st:
        rows = st.rows(st.select_set().name)
        X = rows.load()
    with torch.inference_mode():
        t = model.encode_text(open_clip.get_tokenizer("ViT-S-32")(["a photo of a cat"])).float().numpy()[0]
    expected = X @ (t / np.linalg.norm(t))
    by_id = dict(zip(rows.ids, expected))
    assert len(h) == 6
    for x in h:
        assert x["score"] == pytest.approx(by_id[x["id"]], abs=2e-3)
    r = embed("search", tmp_path / "c.h5", "--text", "a cat", "-k", 3)  # without the weights file: refused, with the fix
    assert r.exit_code == 2 and "--weights" in r.output


def test_the_default_set_is_the_one_holding_the_most_vectors_and_an_id_in_another_set_is_named(tmp_path):
    """After a second set (e.g. a fine-tune's re-embed), photos added later go into the default
    encoder's set: reads without --set use that set (the most vectors), not the newest that lacks
    them; an id only another set holds says which set, not 'no item with id'."""
    from PIL import Image

    from embedstore.ingest import build
    from embedstore.store import open_store

    photos = make_image_folder(tmp_path / "photos", classes=("cat", "dog"), per_class=4)
    s = tmp_path / "s.h5"
    build(photos, s, encoder="test:tiny", workers=0, progress=False)
    build(photos, s, encoder="test:tiny", normalize="none", workers=0, progress=False)  # newer, same items
    with open_store(s) as st:
        sets = {v.provenance.get("normalize"): v.name for v in st.vector_sets()}
        assert st.select_set(None).name == sets["none"]  # equal counts: the newest
    Image.open(next((photos / "cat").iterdir())).rotate(30).save(photos / "cat" / "new.jpg")
    build(photos, s, encoder="test:tiny", workers=0, progress=False)
    with open_store(s) as st:
        chosen = st.select_set(None)
        assert chosen.name == sets["l2"] and "the most vectors" in chosen.note
    r = embed("search", s, "--id", "cat/new.jpg", "-k", 2, "--json")
    assert r.exit_code == 0, r.output
    r = embed("search", s, "--set", sets["none"], "--id", "cat/new.jpg")
    assert r.exit_code == 2 and f"has no vector in {sets['none']}" in r.output and sets["l2"] in r.output, r.output


def test_ivfpq_training_leaves_out_polysemous_codes(monkeypatch):
    """Polysemous training (FAISS's default for IVF-PQ) costs seconds per sub-quantizer and serves
    only Hamming-filtered search, which the index never runs; the trained index is an IVF-PQ."""
    import faiss

    from embedstore.store.index import _new_index

    monkeypatch.setenv("EMBEDSTORE_EXACT_MAX", "500")
    monkeypatch.setenv("EMBEDSTORE_PQ_MIN", "1000")
    X = np.random.default_rng(0).normal(size=(1500, 16)).astype(np.float32)
    index = _new_index(16, "inner_product", len(X), lambda a, b: iter([X[a:b]]))
    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    assert isinstance(ivf, faiss.IndexIVFPQ) and ivf.is_trained and ivf.pq.M == 4
    assert not ivf.do_polysemous_training


def test_cosine_scores_stay_within_one_through_every_door(tmp_path):
    """A float16 row's norm is 1 only to about 1e-3: a self-match, or a duplicate, scored 1.0001 in
    the CLI and 1.0000109 in the server's JSON. Scores of a normalised set are cosines, clipped to
    [-1, 1], on the plain FAISS path and the filtered one alike; unnormalised scores are left alone."""
    import faiss

    from embedstore.search.index import ArrayRows, SearchIndex
    from embedstore.serve.server import open_api
    from test_recommend import vector_store

    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 8)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    X[1] = X[0] * 1.002  # a duplicate whose stored norm rounded up
    index = faiss.IndexFlatIP(8)
    index.add(X)
    for cosine, top in ((True, 1.0), (False, np.float32(1.002))):
        s = SearchIndex(index, {"kind": "flat", "exact": True}, ArrayRows(X), cosine=cosine)
        plain = s.search(X[:1], 2)
        filtered = s.search(X[:1], 2, allowed=np.arange(20) < 10)
        assert plain.D[0, 0] == pytest.approx(top, abs=1e-6) and filtered.D[0, 0] == pytest.approx(top, abs=1e-6)
        assert plain.R[0, 0] == 1 and s.search(X[:1], 30).R[0, -1] == -1  # an empty slot stays empty
    # through a store (the doors read vectors as stored: written here 0.2% over unit length)
    store = tmp_path / "c.h5"
    from embedstore.store import ItemRows, open_store

    ids = [f"i{i:02d}" for i in range(20)]
    with open_store(store, mode="a", create=True) as st:
        items = ItemRows()
        for i in ids:
            items.append(id=i, uri=f"/data/{i}.jpg", sha256=i, status="ok", label="a")
        st.commit("synthetic-0000", {"encoder": "synthetic", "dim": 8, "dtype": "float32", "normalize": "l2",
                                     "modality": "image"}, items, ids, ids, X, {})
        st.refresh(index=True)
    cli = json.loads(embed("search", store, "--id", "i00", "-k", 2, "--json").output)["hits"]
    api = open_api(store).handle("GET", "/api/search", {"id": "i00", "k": "2"}).json()["hits"]
    assert cli[0]["id"] == api[0]["id"] == "i01" and cli[0]["score"] == api[0]["score"] == 1.0


def test_an_item_missing_from_an_imported_set_is_advised_an_import_not_a_build(tmp_path, build_tiny):
    """The advice for an id the (imported) default set lacks named `embed build --encoder
    external:...`, which fails with 'unknown encoder source'. For an imported set it is an import."""
    from conftest import make_image_folder

    a = make_image_folder(tmp_path / "a", per_class=6)
    b = make_image_folder(tmp_path / "b", classes=("owl",), per_class=4, seed=3)
    build_tiny(a, tmp_path / "a.h5")
    assert embed("export", tmp_path / "a.h5", "--out", tmp_path / "exp").exit_code == 0
    build_tiny(b, tmp_path / "b.h5")
    assert embed("import", tmp_path / "exp", "--store", tmp_path / "b.h5", "-q").exit_code == 0
    r = embed("search", tmp_path / "b.h5", "--id", "owl/owl_000.jpg")  # the 12 imported rows are the default set
    assert r.exit_code == 2 and "embed import FOLDER --store" in r.output and "--encoder external" not in r.output, r.output
    assert "pick that with --set" in r.output


def test_an_index_filled_before_rows_were_read_as_unit_vectors_is_not_used_and_is_rebuilt(tmp_path, build_tiny):
    """A float16 l2 store built before rows were read back as unit vectors has an index of the rows
    as stored: its hits and scores differed from an exact scan's while verify said intact and info
    "up to date". Readers scan exactly and say why, info and verify say it, a writer rebuilds it."""
    import glob

    src = make_image_folder(tmp_path / "photos", per_class=6)
    store = tmp_path / "s.h5"
    build_tiny(src, store)
    (meta_path,) = glob.glob(str(tmp_path / "s.h5.d" / "index" / "*.json"))

    def age():  # what an index written before carries: no unit_rows
        m = json.loads(Path(meta_path).read_text())
        m.pop("unit_rows")
        Path(meta_path).write_text(json.dumps(m))

    age()
    r = json.loads(embed("search", store, "--id", "cat/cat_000.jpg", "-k", 3, "--json").stdout)
    ex = json.loads(embed("search", store, "--id", "cat/cat_000.jpg", "-k", 3, "--exact", "--json").stdout)
    stale = "built before float16 rows were read back as unit vectors"
    assert stale in r["index"]["note"], r["index"]  # the index is not used: the rows are scanned
    assert [(h["id"], h["score"]) for h in r["hits"]] == [(h["id"], h["score"]) for h in ex["hits"]]
    assert "STALE: built from float16 rows as stored" in embed("info", store).stdout
    v = embed("verify", store, "--json")
    assert v.exit_code == 0 and any("verify" in n and "unit vectors" in n for n in json.loads(v.stdout)["notes"])
    assert embed("verify", store, "--repair").exit_code == 0
    assert json.loads(Path(meta_path).read_text())["unit_rows"] is True
    age()
    rep = build_tiny(src, store)
    assert any("before they were read back as unit vectors" in n and "rebuilt it" in n for n in rep.notes), rep.notes
    r = json.loads(embed("search", store, "--id", "cat/cat_000.jpg", "-k", 3, "--json").stdout)
    assert stale not in r["index"].get("note", "") and [h["id"] for h in r["hits"]] == [h["id"] for h in ex["hits"]]
    assert [h["score"] for h in r["hits"]] == pytest.approx([h["score"] for h in ex["hits"]], abs=1e-6)

    f32 = tmp_path / "f.h5"  # a float32 set's rows were unit already: its index stands
    build_tiny(src, f32, dtype="float32")
    (m32,) = glob.glob(str(tmp_path / "f.h5.d" / "index" / "*.json"))
    m = json.loads(Path(m32).read_text())
    m.pop("unit_rows")
    Path(m32).write_text(json.dumps(m))
    assert stale not in json.loads(embed("search", f32, "--id", "cat/cat_000.jpg", "-k", 3, "--json").stdout)["index"].get("note", "")


def test_a_quarantined_id_is_said_to_be_quarantined_not_missing(tmp_path, build_tiny):
    """`search --id` on a quarantined item said there was no such item and offered a close match:
    another file (case.jpg for Case.jpg). It names the quarantine and its reason."""
    src = make_image_folder(tmp_path / "photos", per_class=3)
    (src / "cat" / "zero.jpg").write_bytes(b"")
    build_tiny(src, tmp_path / "s.h5")
    r = embed("search", tmp_path / "s.h5", "--id", "cat/zero.jpg")
    assert r.exit_code == 2 and "quarantined (empty file (0 bytes))" in r.stderr and "did you mean" not in r.stderr, r.stderr
