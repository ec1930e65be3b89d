"""`embed recommend`: profiles, exclusion of seen items, MMR diversity, filters, unknown ids,
empty profiles, users with no interactions, cross-domain provenance, the evaluation protocol and
its baselines, the HTML report, and one answer through the Python API, the CLI and the server
(and the page's "more like these" in Chromium)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import embed, make_image_folder


# ---- fixtures --------------------------------------------------------------------------------
def vector_store(path: Path, X: np.ndarray, labels, ids=None, encoder: str = "synthetic") -> Path:
    """A store holding exactly the unit vectors X (float32), with labels."""
    from embedstore.store import ItemRows, open_store

    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    ids = ids or [f"i{i:04d}" for i in range(len(X))]
    attrs = {"encoder": encoder, "dim": X.shape[1], "dtype": "float32", "normalize": "l2", "modality": "image"}
    with open_store(path, mode="a", create=True) as st:
        items = ItemRows()
        for i, lab in zip(ids, labels):
            items.append(id=i, uri=f"/data/{i}.jpg", sha256=i, status="ok", label=str(lab))
        st.commit(f"{encoder}-0000", attrs, items, ids, ids, X, {})
        st.refresh(index=True)
    return path


def planted(seed: int = 0, per: int = 12, dim: int = 16):
    """Three tight clusters: A, B, and M at the midpoint of A and B (the mean of two tastes)."""
    rng = np.random.default_rng(seed)
    a, b = np.zeros(dim), np.zeros(dim)
    a[0], b[1] = 1.0, 1.0
    m = (a + b) / np.sqrt(2)
    X = np.concatenate([c + 0.05 * rng.normal(size=(per, dim)) for c in (a, b, m)])
    return X, ["A"] * per + ["B"] * per + ["M"] * per


@pytest.fixture(scope="module")
def tastes(tmp_path_factory):
    root = tmp_path_factory.mktemp("tastes")
    X, labels = planted()
    return vector_store(root / "t.h5", X, labels), X, labels


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    from embedstore.ingest import build

    root = tmp_path_factory.mktemp("rec-photos")
    make_image_folder(root / "photos", classes=("cat", "dog", "owl"), per_class=8)
    build(root / "photos", root / "s.h5", encoder="test:tiny", workers=0, precision="fp32", progress=False)
    return root


def ids_of(hits) -> list[str]:
    return [h["id"] for h in hits]


def write_csv(path: Path, header, rows) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


# ---- profiles and MMR (arrays) ---------------------------------------------------------------
def test_mmr_without_diversity_is_relevance_order_and_with_it_skips_near_duplicates():
    from embedstore.recommend.profile import mmr, unit

    rel = np.array([0.9, 0.89, 0.88, 0.5])
    V = unit(np.array([[1, 0, 0], [1, 0.01, 0], [1, 0, 0.01], [0, 1, 0]], dtype=np.float32))
    assert mmr(rel, V, 3, 0.0).tolist() == [0, 1, 2]
    assert mmr(rel, V, 2, 0.5).tolist() == [0, 3]  # the two near-copies of item 0 give way to the different item


def test_many_likes_are_clustered_on_a_sample_and_every_like_assigned():
    from embedstore.recommend.profile import CLUSTER_SAMPLE, build_profiles, cluster_liked, unit

    rng = np.random.default_rng(3)
    a, b = np.eye(8)[0], np.eye(8)[1]
    L = unit(np.concatenate([a + 0.05 * rng.normal(size=(700, 8)), b + 0.05 * rng.normal(size=(300, 8))]))
    assert len(L) > CLUSTER_SAMPLE
    lab = cluster_liked(L)
    assert len(lab) == 1000 and len(set(lab[:700])) == 1 and len(set(lab[700:])) == 1 and lab[0] != lab[-1]
    P = build_profiles(L)
    assert len(P) == 2 and sorted(np.argmax(P, axis=1).tolist()) == [0, 1]


def test_varied_tastes_get_one_profile_per_cluster_not_their_mean(tastes):
    from embedstore.recommend import recommend

    store, X, labels = tastes
    like = ["i0000", "i0001", "i0002", "i0012", "i0013", "i0014"]  # three A, three B
    mean = recommend(store, like, k=6, clusters=1)
    assert mean.profiles == 1 and {h["label"] for h in mean.hits} == {"M"}  # the mean of A and B is M: neither taste
    auto = recommend(store, like, k=6)
    assert auto.profiles == 2 and {h["label"] for h in auto.hits} == {"A", "B"}
    one = recommend(store, ["i0000", "i0001", "i0002", "i0003"], k=4)
    assert one.profiles == 1 and {h["label"] for h in one.hits} == {"A"}  # one clear taste: one mean


def test_dislikes_push_the_profile_away(tastes):
    from embedstore.recommend import recommend

    store, _, _ = tastes
    plain = recommend(store, ["i0024", "i0025"], k=8)  # two M items: the nearest are M
    assert {h["label"] for h in plain.hits} == {"M"}
    away = recommend(store, ["i0024", "i0025"], dislike=[f"i{i:04d}" for i in range(12, 24)], k=8, dislike_weight=1.0)
    # M - mean(B) points at A: cosine ~0.92 to the A cluster, ~0.38 to the rest of M, negative to B
    assert {h["label"] for h in away.hits} == {"A"}
    half = recommend(store, ["i0024", "i0025"], dislike=[f"i{i:04d}" for i in range(12, 24)], k=8, dislike_weight=0.1)
    assert {h["label"] for h in half.hits} == {"M"}  # a light dislike only tilts the profile


# ---- the rules ---------------------------------------------------------------------------------
def test_inputs_never_come_back_even_when_k_takes_every_other_item(tastes):
    from embedstore.recommend import recommend

    store, X, _ = tastes
    like, dislike = ["i0000", "i0013"], ["i0030"]
    r = recommend(store, like, dislike, k=len(X) - 3)
    got = ids_of(r.hits)
    assert len(got) == len(X) - 3 == len(set(got)) and not set(got) & set(like + dislike)
    with pytest.raises(Exception, match=r"-k 34 is larger than the 33 item\(s\)"):
        recommend(store, like, dislike, k=len(X) - 2)


def test_diversity_changes_the_list_measurably(photos):
    from embedstore.recommend import recommend
    from embedstore.store import open_store

    plain = recommend(photos / "s.h5", "cat/cat_000.jpg", k=7)
    diverse = recommend(photos / "s.h5", "cat/cat_000.jpg", k=7, diversity=0.7)
    assert ids_of(plain.hits) != ids_of(diverse.hits)
    with open_store(photos / "s.h5") as st:
        rows = st.rows(st.select_set(None).name)
    pos = {i: n for n, i in enumerate(rows.ids)}

    def spread(hits):  # mean pairwise cosine among the recommended items: lower is more varied
        V = rows.load_at(np.array([pos[h["id"]] for h in hits]))
        V /= np.linalg.norm(V, axis=1, keepdims=True)
        S = V @ V.T
        return (S.sum() - len(S)) / (len(S) * (len(S) - 1))

    assert {h["label"] for h in plain.hits} == {"cat"} and len({h["label"] for h in diverse.hits}) >= 2
    assert spread(diverse.hits) < spread(plain.hits) - 0.02


def test_where_filters_through_the_index_and_matches_brute_force(photos):
    from embedstore.recommend import recommend
    from embedstore.store import open_store

    r = recommend(photos / "s.h5", "cat/cat_000.jpg,cat/cat_001.png", k=5, where="label=dog")
    assert [h["label"] for h in r.hits] == ["dog"] * 5 and r.plan["selected"] == 8
    with open_store(photos / "s.h5") as st:
        rows = st.rows(st.select_set(None).name)
    X = rows.load()
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    liked = [list(rows.ids).index(i) for i in ("cat/cat_000.jpg", "cat/cat_001.png")]
    p = X[liked].mean(axis=0)
    p /= np.linalg.norm(p)
    dogs = np.flatnonzero(rows.labels == "dog")
    best = dogs[np.argsort(-(X[dogs] @ p))][:5]
    assert ids_of(r.hits) == [str(rows.ids[j]) for j in best]


def test_unknown_ids_are_one_line_errors(photos):
    from embedstore.errors import SearchError
    from embedstore.recommend import recommend

    with pytest.raises(SearchError, match="liked id: no item with id 'cat/nope.jpg'"):
        recommend(photos / "s.h5", "cat/cat_000.jpg,cat/nope.jpg")
    for args in (["--like", "cat/nope.jpg"], ["--like", "cat/cat_000.jpg", "--dislike", "dog/nope.png"]):
        r = embed("recommend", photos / "s.h5", *args)
        assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1 and "nope" in r.output and "Traceback" not in r.output


def test_empty_profiles_are_refused_with_a_reason(tastes, tmp_path):
    from embedstore.errors import SearchError
    from embedstore.recommend import recommend

    store, X, labels = tastes
    with pytest.raises(SearchError, match="every liked item is also disliked"):
        recommend(store, ["i0000", "i0001"], dislike=["i0001", "i0000"])
    r = embed("recommend", store, "--like", "i0000", "--dislike", "i0000")
    assert r.exit_code == 2 and "empty profile" in r.output and len(r.output.strip().splitlines()) == 1
    with pytest.raises(SearchError, match="at least one liked item"):
        recommend(store, " , ")
    # a disliked copy of the liked vector cancels it (dislike weight 1): nothing is left to search with
    twin = vector_store(tmp_path / "twin.h5", np.concatenate([X, X[:1]]), labels + ["A"])
    with pytest.raises(SearchError, match="cancel the liked ones"):
        recommend(twin, ["i0000"], dislike=[f"i{len(X):04d}"], dislike_weight=1.0)
    # liked ids that are all unknown: an error naming them
    with pytest.raises(SearchError, match="liked id: no item with id 'x1'.*1 more liked id\\(s\\) not in .*: x2"):
        recommend(store, ["x1", "x2"])


def test_nothing_left_to_recommend_says_so_instead_of_a_k_that_fails(photos):
    """Every item of the --where pool liked: '-k 1 is larger than the 0 items; use -k 1 or less'
    contradicted itself, through the CLI and the page alike."""
    from embedstore.serve.server import open_api

    cats = ",".join(f"cat/cat_{i:03d}.{'jpg' if i % 2 == 0 else 'png'}" for i in range(8))
    r = embed("recommend", photos / "s.h5", "--like", cats, "--where", "label=cat", "-k", "1")
    assert r.exit_code == 2 and "nothing can come back: 0 item(s) there are to recommend" in r.output and "use -k" not in r.output, r.output
    rep = open_api(photos / "s.h5").handle("GET", "/api/recommend", {"like": cats, "where": "label=cat", "k": "1", "clip_k": "1"})
    assert rep.status == 400 and rep.json()["error"].startswith("nothing can come back"), rep.json()


def test_bad_options_fail_before_work(tastes):
    store, _, _ = tastes
    for args, msg in ((["--like", "i0000", "--diversity", "1.5"], "--diversity"), (["--like", "i0000", "-k", "0"], "-k"),
                      (["--interactions", "x.csv"], "--out"), ([], "give one of"),
                      (["--like", "i0000", "--where", "colour=red"], "unknown filter key"),
                      (["--like", "i0000", "--clusters", "-1"], "--clusters")):
        r = embed("recommend", store, *args)
        assert r.exit_code == 2 and msg in r.output and len(r.output.strip().splitlines()) == 1, (args, r.output)


def test_help_has_examples():
    r = embed("recommend", "--help")
    assert r.exit_code == 0 and "embed recommend photos.h5 --like" in r.output and "--evaluate" in r.output


# ---- interactions: per user, streamed --------------------------------------------------------
def test_interactions_exclude_seen_items_and_users_with_none_get_popular(tastes, tmp_path):
    store, X, _ = tastes
    rows = [("u1", "i0000", 5), ("u1", "i0001", 4), ("u1", "i0002", 1),   # u1 rated i0002 low: a dislike with --min-rating 3
            ("u2", "i0012", 5), ("u2", "i0013", 5),
            ("u3", "", ""),                                             # a user with no interactions
            ("u4", "not-here", 5),                                      # only an unknown item
            ("u5", "i0002", 1)]                                         # only a dislike
    inter = write_csv(tmp_path / "likes.csv", ["user", "item", "rating"], rows)
    for out in (tmp_path / "recs.csv", tmp_path / "recs.parquet"):
        r = embed("recommend", store, "--interactions", inter, "--out", out, "-k", "5", "--min-rating", "3", "--json")
        assert r.exit_code == 0, r.output
        rep = json.loads(r.output)
        assert rep["users"] == 5 and rep["from_profile"] == 2 and rep["from_popular"] == 3 and rep["unknown_items"] == 1
        assert rep["short"] == 3  # only four items were liked at all: the popular lists hold four
        assert any("not-here" in n for n in rep["notes"])
    import pyarrow.parquet as pq

    t = pq.read_table(tmp_path / "recs.parquet").to_pylist()
    with open(tmp_path / "recs.csv") as f:
        c = list(csv.DictReader(f))
    assert [(x["user"], x["id"]) for x in t] == [(x["user"], x["id"]) for x in c] and len(t) == 5 + 5 + 3 * 4
    by_user = {}
    for x in t:
        by_user.setdefault(x["user"], []).append(x)
    seen = {"u1": {"i0000", "i0001", "i0002"}, "u2": {"i0012", "i0013"}, "u5": {"i0002"}}
    for u, got in by_user.items():
        assert not {x["id"] for x in got} & seen.get(u, set()), u
        assert [x["rank"] for x in got] == list(range(1, len(got) + 1))
    assert {x["source"] for x in by_user["u1"]} == {"profile"} and {x["label"] for x in by_user["u1"]} == {"A"}
    assert {x["label"] for x in by_user["u2"]} == {"B"}
    for u in ("u3", "u4", "u5"):  # no usable likes: the liked items, most liked first (dislikes do not count)
        assert {x["source"] for x in by_user[u]} == {"popular"}
        assert [x["id"] for x in by_user[u]] == ["i0000", "i0001", "i0012", "i0013"]


def test_interactions_with_only_unknown_items_fail_in_one_line(tastes, tmp_path):
    store, _, _ = tastes
    inter = write_csv(tmp_path / "bad.csv", ["user", "item"], [("u1", "zz1"), ("u2", "zz2")])
    r = embed("recommend", store, "--interactions", inter, "--out", tmp_path / "o.csv")
    assert r.exit_code == 2 and "none of the items" in r.output and not (tmp_path / "o.csv").exists()
    r = embed("recommend", store, "--interactions", write_csv(tmp_path / "cols.csv", ["who", "what"], [("a", "b")]),
              "--out", tmp_path / "o.csv")
    assert r.exit_code == 2 and "needs user and item" in r.output


# ---- cross-domain ------------------------------------------------------------------------------
def test_cross_domain_uses_the_other_store_and_refuses_another_encoder(tastes, tmp_path):
    from embedstore.errors import ProvenanceMismatchError
    from embedstore.recommend import recommend

    store, X, labels = tastes
    rng = np.random.default_rng(5)
    other = vector_store(tmp_path / "shop.h5", X + 0.05 * rng.normal(size=X.shape), labels, ids=[f"p{i:03d}" for i in range(len(X))])
    r = recommend(other, ["i0012", "i0013"], k=5, like_store=store)
    assert r.liked_from.startswith("t.h5:") and all(h["id"].startswith("p") for h in r.hits)
    assert {h["label"] for h in r.hits} == {"B"}
    foreign = vector_store(tmp_path / "foreign.h5", X, labels, encoder="other-encoder")
    with pytest.raises(ProvenanceMismatchError, match="encoder=synthetic vs encoder=other-encoder"):
        recommend(foreign, ["i0012"], like_store=store)
    res = embed("recommend", foreign, "--like-store", store, "--like", "i0012")
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1 and "same encoder" in res.output
    # when the target store also holds a set made like the liked vectors, the error names it
    vector_store(foreign, X, labels, encoder="synthetic")
    with pytest.raises(ProvenanceMismatchError, match="with --set synthetic"):
        recommend(foreign, ["i0012"], like_store=store, vector_set="other-encoder")
    # per-user lists across stores: the items a user saw are left out by id when the target has them too
    inter = write_csv(tmp_path / "x.csv", ["user", "item"], [("u", "i0012"), ("u", "i0013")])
    res = embed("recommend", other, "--like-store", store, "--interactions", inter, "--out", tmp_path / "x-out.csv", "-k", "3", "--json")
    assert res.exit_code == 0 and json.loads(res.output)["liked_from"].startswith("t.h5:")


# ---- evaluation ------------------------------------------------------------------------------
def taste_interactions(path: Path, labels: list[str], n_users: int = 60, seed: int = 0, cold: set | None = None,
                       timestamps: bool = True) -> Path:
    """Users who like one class; popular items are the first few of every class; each user's last
    interaction is an item nobody touched before (cold) half the time."""
    rng = np.random.default_rng(seed)
    labels = np.array(labels)
    rows = []
    for u in range(n_users):
        c = np.flatnonzero(labels == rng.choice(np.unique(labels)))
        warm = [j for j in c if j not in (cold or set())]
        picks = list(rng.choice(warm[:6], 3, replace=False))
        if cold and rng.random() < 0.5:
            picks.append(rng.choice(sorted(set(c) & cold)))
        else:
            picks.append(rng.choice([j for j in warm if j not in picks]))
        for t, j in enumerate(picks):
            rows.append((f"u{u:03d}", f"i{j:04d}") + ((t,) if timestamps else ()))
    order = rng.permutation(len(rows))  # file order is not time order
    return write_csv(path, ["user", "item"] + (["timestamp"] if timestamps else []), [rows[i] for i in order])


def test_evaluate_leave_last_out_baselines_and_cold_start(tastes, tmp_path):
    store, X, labels = tastes
    cold = {j for j in range(len(X)) if j % 12 >= 9}  # three items of each class no training user touches
    inter = taste_interactions(tmp_path / "i.csv", labels, cold=cold)
    r = embed("recommend", store, "--evaluate", inter, "-k", "5", "--json")
    assert r.exit_code == 0, r.output
    e = json.loads(r.output)
    p = e["protocol"]
    assert p["split"] == "leave-last-out by timestamp" and p["users_scored"] == 60 and 20 <= p["cold_start_users"] < 60
    m = e["methods"]
    for name in ("content", "popular", "item-knn"):
        for view in ("all", "cold_start"):
            x = m[name][view]
            for key in ("hit_rate", "ndcg"):
                lo, hi = x[key + "_ci"]
                assert lo <= x[key] <= hi and hi - lo > 0, (name, view, key)
            assert "coverage_ci" not in x and x["coverage"] == x["items_recommended"] / p["catalogue"]
    assert m["popular"]["cold_start"]["hit_rate"] == 0 and m["item-knn"]["cold_start"]["hit_rate"] == 0  # they cannot know new items
    assert m["content"]["cold_start"]["hit_rate"] > 0.3
    cs = [c for c in e["comparisons"] if c["view"] == "cold_start" and c["b"] == "popular"][0]
    assert cs["winner"] == "content" and cs["p_value"] < 0.05
    assert m["content"]["all"]["coverage"] > m["popular"]["all"]["coverage"]
    # the human summary names the protocol and each method
    r = embed("recommend", store, "--evaluate", inter, "-k", "5")
    assert r.exit_code == 0 and "leave-last-out" in r.output and "item-knn" in r.output and "content wins" in r.output


def test_evaluate_holds_out_the_latest_liked_item(tastes, tmp_path):
    from embedstore.recommend import evaluate_recommenders

    store, _, _ = tastes
    rows = [("u", "i0000", 30), ("u", "i0001", 10), ("u", "i0002", 20), ("v", "i0012", 1), ("v", "i0013", 2)]
    inter = write_csv(tmp_path / "t.csv", ["user", "item", "timestamp"], rows)
    e, ex = evaluate_recommenders(store, inter, k=3, progress=False, keep=2)
    held = {x["user"]: x["held_out"] for x in ex}
    assert held == {"u": "i0000", "v": "i0013"}
    assert sorted(ex[0]["liked"]) == ["i0001", "i0002"]  # training: the others, never the held-out one


def test_random_holdout_without_timestamps_is_seeded(tastes, tmp_path):
    from embedstore.recommend import evaluate_recommenders

    store, X, labels = tastes
    inter = taste_interactions(tmp_path / "n.csv", labels, timestamps=False)
    a, exa = evaluate_recommenders(store, inter, k=5, seed=1, progress=False, keep=60)
    b, exb = evaluate_recommenders(store, inter, k=5, seed=1, progress=False, keep=60)
    c, exc = evaluate_recommenders(store, inter, k=5, seed=2, progress=False, keep=60)
    assert a.protocol["split"].startswith("random holdout") and "seed 1" in a.protocol["split"]
    assert [x["held_out"] for x in exa] == [x["held_out"] for x in exb] != [x["held_out"] for x in exc]
    assert a.methods == b.methods


# ---- report ------------------------------------------------------------------------------------
def test_report_shows_liked_thumbnails_next_to_recommended(photos, tmp_path):
    inter = write_csv(tmp_path / "likes.csv", ["user", "item"],
                      [("ann", "cat/cat_000.jpg"), ("ann", "cat/cat_001.png"), ("bob", "owl/owl_000.jpg")])
    r = embed("recommend", photos / "s.h5", "--interactions", inter, "--out", tmp_path / "r.csv", "-k", "4",
              "--report", tmp_path / "rep")
    assert r.exit_code == 0, r.output
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "<h3>ann" in page and "<h3>bob" in page and "liked (2)" in page and "recommended (4)" in page
    assert page.count("data:image/png;base64,") == 2 + 4 + 1 + 4  # every liked and recommended item's thumbnail
    r = embed("recommend", photos / "s.h5", "--like", "owl/owl_000.jpg,owl/owl_001.png", "-k", "3", "--report", tmp_path / "one")
    page = (tmp_path / "one" / "index.html").read_text()
    assert r.exit_code == 0 and "liked (2)" in page and "recommended (3)" in page and page.count("data:image/png;base64,") == 5
    r = embed("recommend", photos / "s.h5", "--evaluate", inter, "-k", "4", "--report", tmp_path / "ev")
    assert r.exit_code == 0 and "hit-rate@4" in (tmp_path / "ev" / "index.html").read_text()


# ---- one answer through every door --------------------------------------------------------------
@pytest.mark.parametrize("opts", [{}, {"diversity": 0.4}, {"where": "label=dog|owl", "diversity": 0.2},
                                  {"dislike": "owl/owl_001.png"}, {"clusters": 0}, {"clusters": 2}])
def test_parity_python_cli_and_server(photos, opts):
    from embedstore.recommend import recommend
    from embedstore.serve.server import open_api

    like = "cat/cat_000.jpg,dog/dog_001.png,dog/dog_002.jpg"
    py = ids_of(recommend(photos / "s.h5", like, k=6, **opts).hits)
    args = ["recommend", photos / "s.h5", "--like", like, "-k", "6", "--json"]
    for key, flag in (("diversity", "--diversity"), ("where", "--where"), ("dislike", "--dislike"), ("clusters", "--clusters")):
        if key in opts:
            args += [flag, opts[key]]
    cli = embed(*args)
    assert cli.exit_code == 0, cli.output
    api = open_api(photos / "s.h5")
    rep = api.handle("GET", "/api/recommend", {"like": like, "k": "6", **{k: str(v) for k, v in opts.items()}})
    assert rep.status == 200, rep.body
    assert py == ids_of(json.loads(cli.output)["hits"]) == ids_of(rep.json()["hits"]) and len(py) == 6
    assert "uri" not in rep.json()["hits"][0]  # server paths stay on the server


def test_server_recommend_errors(photos):
    from embedstore.serve.server import open_api

    api = open_api(photos / "s.h5")
    for query, status, msg in (({}, 400, "like=ID"), ({"like": "cat/zz.jpg"}, 404, "no item"),
                               ({"like": "cat/cat_000.jpg", "diversity": "lots"}, 400, "diversity"),
                               ({"like": "cat/cat_000.jpg", "dislike": "cat/cat_000.jpg"}, 400, "empty profile"),
                               ({"like": "cat/cat_000.jpg", "k": "24"}, 400, "larger than the 23")):
        r = api.handle("GET", "/api/recommend", query)
        assert r.status == status and msg in r.json()["error"], (query, r.json())
    assert "/api/recommend" in api.handle("GET", "/openapi.json").json()["paths"]


@pytest.mark.slow
def test_more_like_these_in_headless_chromium(photos):
    """Tick "like" on two results, press "More like these": recommendations appear, the liked items
    are not among them, and they are the ones the API gives for those ids."""
    from test_serve import headless_chromium

    driver = headless_chromium()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from embedstore.serve.server import make_server, open_api

    api = open_api(photos / "s.h5")
    srv = make_server(api, "127.0.0.1", 0).start()
    wait = WebDriverWait(driver, 60)
    try:
        driver.get(f"http://127.0.0.1:{srv.port}/")
        wait.until(lambda d: "24 items" in d.find_element(By.ID, "info").text)
        assert not driver.find_element(By.ID, "more-like").is_enabled()
        driver.find_element(By.ID, "itemid").send_keys("owl/owl_000.jpg")
        driver.find_element(By.ID, "go-id").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .card.result")) == 12)
        cards = driver.find_elements(By.CSS_SELECTOR, "#results .card.result")
        liked = [cards[0].get_attribute("data-id"), cards[1].get_attribute("data-id")]
        for c in cards[:2]:
            c.find_element(By.CSS_SELECTOR, "input.like").click()
        assert driver.find_element(By.ID, "error").text == "" and not driver.find_element(By.ID, "item").is_displayed()
        button = driver.find_element(By.ID, "more-like")
        assert button.is_enabled() and "(2)" in button.text
        button.click()
        wait.until(lambda d: "recommended" in d.find_element(By.ID, "status").text)
        got = [c.get_attribute("data-id") for c in driver.find_elements(By.CSS_SELECTOR, "#results .card.result")]
        want = api.handle("GET", "/api/recommend", {"like": ",".join(liked), "k": "12"}).json()["hits"]
        assert got == ids_of(want) and not set(got) & set(liked) and len(got) == 12
        # the liked items stay ticked when they come back in another list, and clear resets them
        driver.find_element(By.ID, "clear-liked").click()
        assert not driver.find_element(By.ID, "more-like").is_enabled()
        logs = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        assert not logs, logs
    finally:
        driver.quit()
        srv.stop()


def test_users_are_written_a_batch_at_a_time(tastes, tmp_path, monkeypatch):
    """Streaming: each batch of users is written before the next is searched; nothing accumulates."""
    from embedstore.recommend import recommend_users
    from embedstore.reports.table import TableWriter

    store, X, labels = tastes
    inter = taste_interactions(tmp_path / "s.csv", labels, n_users=7)
    sizes, real = [], TableWriter.write

    def spy(self, cols):
        sizes.append(len(set(cols["user"])))
        return real(self, cols)

    monkeypatch.setattr(TableWriter, "write", spy)
    rep, kept = recommend_users(store, inter, tmp_path / "o.parquet", k=3, batch=3, progress=False)
    assert sizes == [3, 3, 1] and rep.users == 7 and rep.rows_written == 21 and kept == []


def test_interaction_files_read_iso_times_parquet_and_refuse_bad_rows(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from embedstore.errors import SourceError
    from embedstore.sources.interactions import read_interactions

    f = write_csv(tmp_path / "iso.csv", ["User", "item", "rating", "timestamp"],
                  [("u1", "a", 5, "2024-05-01T12:00:00"), ("u1", "b", "", "2024-05-03"), ("u1", "c", 4, "2024-05-02T08:00:00")])
    i = read_interactions(f)
    assert i.users.tolist() == ["u1"] * 3 and np.argsort(i.timestamps).tolist() == [0, 2, 1]
    assert i.ratings[0] == 5 and np.isnan(i.ratings[1])
    pq.write_table(pa.table({"user": ["a", "b"], "item": ["x", ""]}), tmp_path / "i.parquet")
    i = read_interactions(tmp_path / "i.parquet")
    assert i.items.tolist() == ["x", ""] and i.timestamps is None and i.ratings is None
    for rows, msg in (([("u", "a", "yesterday")], "neither a number nor an ISO date"), ([("", "a", "1")], "has no user")):
        with pytest.raises(SourceError, match=msg):
            read_interactions(write_csv(tmp_path / "bad.csv", ["user", "item", "timestamp"], rows))
    with pytest.raises(SourceError, match=".csv or .parquet"):
        read_interactions(tmp_path / "x.json")


def test_an_id_with_a_comma_is_liked_through_every_door_when_written_with_a_backslash(tmp_path):
    """`--like "c/a,b.jpg"` was split into 'c/a' and 'b.jpg', and the escape `\\,` that --where
    takes did not help either: an item whose name has a comma could not be liked."""
    from embedstore.recommend import recommend
    from embedstore.serve.server import open_api

    X, labels = planted(per=6)
    ids = [f"c/{i},x.jpg" if i == 3 else f"c/{i}.jpg" for i in range(len(X))]
    store = vector_store(tmp_path / "c.h5", X, labels, ids=ids)
    like = "c/3\\,x.jpg,c/4.jpg"
    py = ids_of(recommend(store, like, k=4).hits)
    cli = embed("recommend", store, "--like", like, "-k", "4", "--json")
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.output)["liked"] == ["c/3,x.jpg", "c/4.jpg"]
    rep = open_api(store).handle("GET", "/api/recommend", {"like": like, "k": "4"})
    assert rep.status == 200 and rep.json()["liked"] == ["c/3,x.jpg", "c/4.jpg"], rep.body
    assert py == ids_of(json.loads(cli.output)["hits"]) == ids_of(rep.json()["hits"]) and len(py) == 4
    r = embed("recommend", store, "--like", "c/3,x.jpg")  # unescaped: two ids, neither in the store
    assert r.exit_code == 2 and "a comma inside an id is written \\," in r.output


def test_a_byte_copy_of_a_liked_item_is_seen_too_through_every_door(tmp_path, build_tiny):
    """A copy of a liked photo under another name came back first, at score 1.0: only the liked id
    was left out. The copy is seen content too, for --like and for --interactions alike."""
    import shutil

    from embedstore.recommend.query import recommend

    src = make_image_folder(tmp_path / "photos", classes=("cat", "dog"), per_class=6)
    shutil.copy(src / "cat" / "cat_000.jpg", src / "dog" / "zz_copy.jpg")
    store = build_tiny(src, tmp_path / "s.h5") and tmp_path / "s.h5"
    got = ids_of(recommend(store, "cat/cat_000.jpg", k=5).hits)
    assert "dog/zz_copy.jpg" not in got and "cat/cat_000.jpg" not in got and len(got) == 5
    cli = json.loads(embed("recommend", store, "--like", "cat/cat_000.jpg", "-k", 5, "--json").stdout)
    assert ids_of(cli["hits"]) == got
    inter = write_csv(tmp_path / "i.csv", ["user", "item"], [("u", "cat/cat_000.jpg")])
    assert embed("recommend", store, "--interactions", inter, "--out", tmp_path / "r.csv", "-k", 5, "-q").exit_code == 0
    with open(tmp_path / "r.csv") as f:
        assert [x["id"] for x in csv.DictReader(f)] == got
    # the copy itself, liked: the original is left out the same way
    assert "cat/cat_000.jpg" not in ids_of(recommend(store, "dog/zz_copy.jpg", k=5).hits)
    # -k as large as the store allows counts the copy out first (it gave one fewer, "complete")
    every = recommend(store, "cat/cat_000.jpg", k=11).hits  # 13 items: the liked one and its copy left out
    assert len(every) == 11 and "dog/zz_copy.jpg" not in ids_of(every)
    with pytest.raises(Exception, match="-k 12"):
        recommend(store, "cat/cat_000.jpg", k=12)
    # liked in another store: the same bytes here are seen too
    other = make_image_folder(tmp_path / "other", classes=("owl",), per_class=3, seed=4)
    shutil.copy(src / "cat" / "cat_000.jpg", other / "owl" / "mine.jpg")
    build_tiny(other, tmp_path / "o.h5")
    got = ids_of(recommend(tmp_path / "o.h5", "cat/cat_000.jpg", k=3, like_store=store).hits)
    assert "owl/mine.jpg" not in got and len(got) == 3
    # evaluate: every method sees copies alike; a user whose held-out item is a copy of a training item is not scored
    ev = write_csv(tmp_path / "ev.csv", ["user", "item", "timestamp"],
                   [(f"u{j}", it, t) for j in range(4) for t, it in enumerate(["cat/cat_000.jpg", "cat/cat_002.jpg",
                                                                              "dog/zz_copy.jpg" if j < 2 else "cat/cat_004.jpg"])])
    e = json.loads(embed("recommend", store, "--evaluate", ev, "-k", 3, "--json").stdout)
    assert e["protocol"]["users_scored"] == 2
    assert any(n.startswith("2 user(s) whose held-out item has the content of one of their training items") for n in e["notes"])
