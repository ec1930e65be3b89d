"""`embed anomalies`: fit on a subset, rank, threshold, evaluate, save; and its error paths."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import add_bad_files, embed, make_image_folder




@pytest.fixture(scope="session")
def store(tmp_path_factory):
    from embedstore.ingest import build

    root = tmp_path_factory.mktemp("anom")
    make_image_folder(root / "photos", classes=("cat", "dog", "owl"), per_class=12)
    build(root / "photos", root / "s.h5", encoder="test:tiny", workers=0, precision="fp32", progress=False)
    return root / "s.h5"


@pytest.mark.parametrize("method", ["knn", "lof", "mahalanobis", "pca", "iforest", "ocsvm"])
def test_every_method_ranks_other_classes_above_the_normal_one(store, method):
    r = embed("anomalies", "--store", store, "--method", method, "--fit-on", "label=cat", "--json", "-q", "--top", 36)
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["fit_count"] == 12 and rep["scored_count"] == 36
    (warning,) = rep["warnings"]  # 12 fit items: the threshold is noisy, and the report says so
    assert "only 12 items (under 100)" in warning and "--fit-on" in warning
    assert rep["evaluation"]["normal_labels"] == ["cat"] and rep["evaluation"]["auroc"] >= 0.9
    e = rep["evaluation"]  # AUPRC with its interval, beside the rate a random ranking would score
    assert e["auprc_ci"][0] <= e["auprc"] <= e["auprc_ci"][1] and e["auprc_ci"][1] - e["auprc_ci"][0] > 0
    assert e["auprc"] > e["anomaly_rate"] == pytest.approx(24 / 36)
    ranked = rep["ranked"]
    assert [x["rank"] for x in ranked] == list(range(1, 37))
    assert all(a["score"] >= b["score"] for a, b in zip(ranked, ranked[1:]))
    assert sum(x["label"] != "cat" for x in ranked[:12]) >= 10


def test_the_html_report_shows_what_the_cli_prints(store, tmp_path):
    """The page showed 24 cards whatever --top was, no threshold, no warning, and cards without id or
    flag (the id only as alt text). It shows the CLI's top rows with the same ids, flags and fit marks."""
    import html as H
    import re

    args = ["anomalies", "--store", store, "--fit-on", "label=cat", "--top", 5, "-q"]
    rep = json.loads(embed(*args, "--json").stdout)
    assert embed(*args, "--report", tmp_path / "rep").exit_code == 0
    page = H.unescape((tmp_path / "rep" / "index.html").read_text())
    assert "Top 5 anomalies" in page and f"Threshold: {rep['threshold']['description']}" in page
    assert f"warning: {rep['warnings'][0]}" in page
    captions = re.findall(r"#(\d+) (\S+) \| (\S+) \| score [^|<]+(?:\| ([^<]+))?</div>", page)
    assert [(int(n), i) for n, i, _, _ in captions] == [(x["rank"], x["id"]) for x in rep["ranked"][:5]]
    for (_, _, _, marks), x in zip(captions, rep["ranked"]):
        assert ("FLAGGED" in marks) == x["flagged"] and ("fitted on" in marks) == x["in_fit_set"]
    # the text table marks the rows the detector was fitted on (fitted on everything: every row), labels aligned
    lines = embed("anomalies", "--store", store, "--top", 4, "-q").stdout.splitlines()
    head = next(i for i, x in enumerate(lines) if x.lstrip().startswith("rank"))
    rows = lines[head + 1 : head + 5]
    assert all(x.split()[3] in ("f", "*f") for x in rows), rows
    assert len({x.index(x.split()[-1]) for x in rows}) == 1  # the id column starts at one place


def test_out_save_plots_and_threshold(store, tmp_path):
    r = embed("anomalies", "--store", store, "--fit-on", "label=cat|dog", "--normal-labels", "cat,dog", "--holdout-quantile", "0.9",
              "--out", tmp_path / "r.csv", "--save", tmp_path / "det", "--plots", tmp_path / "p", "-q")
    assert r.exit_code == 0, r.output
    lines = (tmp_path / "r.csv").read_text().splitlines()
    assert lines[0] == "rank,id,uri,label,score,percentile,flagged,in_fit_set,excluded" and len(lines) == 37
    doc = json.loads((tmp_path / "det" / "detector.json").read_text())
    assert doc["kind"] == "knn" and doc["provenance"]["encoder"] == "test:tiny"
    assert doc["threshold"]["kind"] == "leave-one-out" and doc["threshold"]["contamination"] == pytest.approx(0.1)  # q 0.9
    assert "threshold: 10% of leave-one-out scores of 24 normal items" in r.output
    assert "warning: the fit set has only 24 items (under 100)" in r.output
    assert (tmp_path / "p" / "scores_by_label.png").stat().st_size > 1000

    from embedstore.modelfile import load_model

    det, _ = load_model(tmp_path / "det", "detector")
    assert det.offset_ == doc["offset"]


def test_score_new_items_with_the_store_encoder(store, tmp_path):
    new = make_image_folder(tmp_path / "new", classes=("cat", "owl"), per_class=3, seed=5)
    r = embed("anomalies", "--store", store, "--fit-on", "label=cat", "--score", new, "--json", "-q")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["scored_count"] == 6 and not any(x["in_fit_set"] for x in rep["ranked"])
    assert {x["label"] for x in rep["ranked"][:3]} == {"owl"}
    # files that cannot be read are listed and said, never dropped silently
    bad = add_bad_files(new)
    r = embed("anomalies", "--store", store, "--fit-on", "label=cat", "--score", new, "--json", "-q")
    rep = json.loads(r.output)
    assert rep["scored_count"] == 6 and {q["id"] for q in rep["quarantined"]} == set(bad)
    assert any("4 file(s)" in n and "not ranked" in n for n in rep["notes"])
    r = embed("anomalies", "--store", store, "--fit-on", "label=cat", "--score", new, "-q")
    assert "4 file(s) of" in r.output and "could not be read" in r.output


@pytest.fixture(scope="session")
def cats(tmp_path_factory):
    """A store of 300 cats and 60 dogs, and a store of 1,000 new cats from the same image generator."""
    from embedstore.ingest import build

    root = tmp_path_factory.mktemp("cats")
    make_image_folder(root / "fit", classes=("cat", "dog"), per_class=300, size=(24, 20))
    make_image_folder(root / "new", classes=("cat",), per_class=1000, size=(24, 20), seed=7)
    for name in ("fit", "new"):
        build(root / name, root / f"{name}.h5", encoder="test:tiny", workers=0, precision="fp32", progress=False)
    return root / "fit.h5", root / "new.h5"


@pytest.mark.parametrize("method", ["knn", "lof", "mahalanobis", "pca", "iforest", "ocsvm"])
def test_contamination_flags_that_share_of_new_normal_items(cats, method):
    """Fit on 300 cats, score 1,000 new cats: about 5% flagged. Bounds [0.02, 0.10]: the threshold rests
    on 300 held-out scores (implied rate sd ~0.013) and 1,000 new items add sd ~0.007; thresholds set on
    in-sample scores (before cross-fitting) flagged 13.3% (Mahalanobis) and 14.7% (PCA) here."""
    from embedstore.detectors.anomalies import find_anomalies

    fit_store, new_store = cats
    rep, det = find_anomalies(fit_store, method, fit_on="label=cat", score=new_store, progress=False)
    assert rep.fit_count == 300 and rep.scored_count == 1000
    assert 0.02 <= rep.flagged / rep.scored_count <= 0.10, (method, rep.flagged)
    assert rep.warnings == []  # 300 fit items: no small-fit-set warning
    how = "leave-one-out scores" if method == "knn" else "out-of-fold scores"
    assert rep.threshold["description"].startswith(f"5% of {how} of 300 normal items"), rep.threshold


def test_fit_set_items_are_not_their_own_neighbours(store):
    from embedstore.detectors.anomalies import find_anomalies

    rep, det = find_anomalies(store, "knn", fit_on="label=cat", progress=False)
    fit_rows = [x for x in rep.ranked if x["in_fit_set"]]
    assert len(fit_rows) == 12 and min(x["score"] for x in fit_rows) > 0  # self-distance 0 never counts


def test_a_k_above_the_fit_set_is_said(store):
    from embedstore.detectors.anomalies import find_anomalies

    rep, _ = find_anomalies(store, "knn", fit_on="label=cat", params={"k": 30}, progress=False)
    assert any(n.startswith("k=30 is more neighbours than the 11 other fit items") for n in rep.notes), rep.notes
    rep, _ = find_anomalies(store, "knn", fit_on="label=cat", progress=False)  # k=5 of 11: nothing to say
    assert not any("neighbours than" in n for n in rep.notes), rep.notes


def test_anomaly_errors(store, tmp_path):
    cases = [
        (["--fit-on", "label=unicorn"], "selects no items"),
        (["--fit-on", "colour=red"], "unknown filter key"),
        (["--fit-on", "label"], "key=value"),
        (["--method", "knnn"], "did you mean knn"),
        (["--param", "k=0"], "cannot fit"),
        (["--contamination", "0.9"], "--contamination must be in (0, 0.5] (the share of normal items to flag"),
        (["--param", "kk=3"], "--param kk: the knn detector has no such parameter; it takes aggregation, k"),
        (["--method", "zzz"], "unknown anomaly method 'zzz'. Known: knn,"),
        (["--holdout-quantile", "1.5"], "--holdout-quantile"),
        (["--holdout-quantile", "0.9", "--contamination", "0.05"], "pass only one"),
        (["--out", tmp_path / "r.txt"], ".csv or .json"),
        (["--normal-labels", "cat,dgo"], "--normal-labels names 'dgo', which no item of"),
        (["--normal-labels", "dgo"], "did you mean 'dog'?"),
    ]
    for extra, message in cases:
        r = embed("anomalies", "--store", store, *extra)
        assert r.exit_code != 0, (extra, r.output)
        assert message in r.output, (extra, r.output)
    other = tmp_path / "o.h5"
    from embedstore.ingest import build

    build(make_image_folder(tmp_path / "o", per_class=2), other, encoder="test:tiny", normalize="none", workers=0, progress=False)
    r = embed("anomalies", "--store", store, "--score", other)
    assert r.exit_code == 2 and "normalize" in r.output


@pytest.mark.slow
def test_knn_and_mahalanobis_auroc_match_plain_faiss_and_sklearn_on_digits(tmp_path):
    """One digit is normal, the nine others anomalies, on real EfficientNet-Lite0 features."""
    import faiss
    from sklearn.covariance import LedoitWolf
    from sklearn.metrics import roc_auc_score

    from embedstore.ingest import build
    from embedstore.datasets import write_digits
    from embedstore.store import open_store
    from embedstore.detectors.anomalies import find_anomalies

    write_digits(tmp_path / "digits", per_class=30)
    build(tmp_path / "digits", tmp_path / "d.h5", encoder="effnet-lite:lite0", progress=False)
    with open_store(tmp_path / "d.h5") as st:
        rows = st.rows(st.select_set().name)
        X = rows.load()
    normal = rows.labels == "0"
    y = ~normal
    Xn = X[normal]

    # plain FAISS: mean distance to the 5 nearest normal items, self excluded for normal items
    idx = faiss.IndexFlatL2(X.shape[1])
    idx.add(Xn)
    d2, nb = idx.search(X, 6)
    d = np.sqrt(np.maximum(d2, 0))
    ref_knn = np.where(normal, d[:, 1:6].mean(1), d[:, :5].mean(1))
    # plain scikit-learn: Ledoit-Wolf Mahalanobis
    ref_maha = LedoitWolf().fit(Xn.astype(np.float64)).mahalanobis(X.astype(np.float64))

    for method, ref in (("knn", ref_knn), ("mahalanobis", ref_maha)):
        rep, _ = find_anomalies(tmp_path / "d.h5", method, fit_on="label=0", progress=False)
        ours = rep.evaluation["auroc"]
        assert abs(ours - roc_auc_score(y, ref)) <= 0.01, (method, ours, roc_auc_score(y, ref))
        assert ours >= 0.9


def test_a_save_path_that_is_not_a_saved_detector_is_never_told_to_pass_force(store, tmp_path):
    """`--save s.h5` said "pass --force to replace it", and with --force "... is not a saved detector;
    refusing": advice that was then refused. A path that is not a saved detector (the store itself, a
    folder of someone else's files) is now told so, with or without --force, and to choose another path;
    a saved detector still gets the --force advice. Nothing is written or replaced."""
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("not ours")
    before = store.read_bytes()
    for target in (store, theirs):
        for extra in ([], ["--force"]):
            r = embed("anomalies", "--store", store, "--save", target, *extra, "-q")
            assert r.exit_code == 2, (target, extra, r.output)
            assert r.output == (f"error: {target} already exists and is not a saved detector, so it is never replaced "
                                "(not even with --force); choose another path\n"), r.output
    assert store.read_bytes() == before and [p.name for p in theirs.iterdir()] == ["notes.txt"]
    ours = tmp_path / "ours"
    assert embed("anomalies", "--store", store, "--save", ours, "-q").exit_code == 0
    r = embed("anomalies", "--store", store, "--save", ours, "-q")
    assert r.exit_code == 2 and "already exists; pass --force to replace it" in r.output, r.output
    assert embed("anomalies", "--store", store, "--save", ours, "--force", "-q").exit_code == 0


def test_a_param_for_a_detector_that_takes_none_says_so(store):
    """mahalanobis has no --param: the message listed its parameters as an empty list ("it takes  (and
    --contamination)"). It now says it takes no --param options; knn still lists its own."""
    r = embed("anomalies", "--store", store, "--method", "mahalanobis", "--param", "foo=1")
    assert r.exit_code == 2, r.output
    assert r.output == ("error: --param foo: the mahalanobis detector has no such parameter; it takes no --param "
                        "options (only --contamination): drop --param\n"), r.output
    r = embed("anomalies", "--store", store, "--method", "knn", "--param", "foo=1")
    assert r.exit_code == 2 and "it takes aggregation, k (and --contamination)" in r.output, r.output


def test_an_out_that_is_a_folder_is_refused_before_the_fit(store, tmp_path, monkeypatch):
    """--out names a file (.csv or .json); an existing folder of that name was found only when the ranking
    was written, after the fit ("cannot write ...: Is a directory"). It is refused first, as `embed audit
    --out` and the other table outputs refuse it."""
    import embedstore.detectors.anomalies as anomalies

    def no_fit(*a, **kw):
        raise AssertionError("the detector was fitted before --out was checked")

    monkeypatch.setattr(anomalies, "find_anomalies", no_fit)
    (tmp_path / "ranked.json").mkdir()
    r = embed("anomalies", "--store", store, "--out", tmp_path / "ranked.json", "-q")
    assert r.exit_code == 2, (r.output, r.exception)
    assert r.output == f"error: --out {tmp_path / 'ranked.json'} is a folder; give a file name ending in .csv or .json\n"
    assert list((tmp_path / "ranked.json").iterdir()) == []


def test_byte_copies_in_the_fit_set_are_warned_of_and_the_audit_exclusion_clears_it(tmp_path, build_tiny):
    """A held-out score cannot flag an item whose copy was fitted on (mahalanobis ranked a planted
    black image 123rd of 126 with its near-twin in the fit set). Byte copies among the fit items are
    a warning naming them and the fix; the audit's exclusion list leaves one of each and no warning."""
    import shutil

    src = make_image_folder(tmp_path / "photos", per_class=6)
    shutil.copy(src / "cat" / "cat_000.jpg", src / "dog" / "copy_a.jpg")
    shutil.copy(src / "cat" / "cat_000.jpg", src / "dog" / "copy_b.jpg")
    store = tmp_path / "s.h5"
    build_tiny(src, store)
    rep = json.loads(embed("anomalies", "--store", store, "--method", "mahalanobis", "--json", "-q").stdout)
    (w,) = [w for w in rep["warnings"] if "byte copies" in w]
    assert w.startswith("3 fit items are byte copies of one another (1 distinct file(s), e.g. ") and "--exclude-kinds" in w
    assert embed("audit", store, "--out", tmp_path / "issues.csv", "--no-labels", "-q").exit_code == 0
    rep = json.loads(embed("anomalies", "--store", store, "--method", "mahalanobis", "--exclude", tmp_path / "issues.csv",
                           "--exclude-kinds", "exact_duplicate,near_duplicate", "--json", "-q").stdout)
    assert rep["excluded_from_fit"] >= 2 and not [w for w in rep["warnings"] if "byte copies" in w]
    rep = json.loads(embed("anomalies", "--store", store, "--fit-on", "label=dog", "--json", "-q").stdout)
    assert [w for w in rep["warnings"] if "byte copies" in w][0].startswith("2 fit items")  # only fit items count
