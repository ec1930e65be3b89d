"""`embed audit` on the bundled digits with planted faults (real encoder, real store), on the clean
digits, and on tiny stores with exact copies; its findings fed back through --exclude."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import built_once, embed, write_image

# its digits stores are built once (scripts/test.sh: --dist loadgroup keeps the file on one worker)
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("audit")]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    from embedstore.datasets import write_digits_with_faults
    from embedstore.ingest import build

    def make(root):
        truth = write_digits_with_faults(root, seed=0, per_class=60, near_copies=30, leaks=20, flip_fraction=0.05)
        build(truth["manifest"], root / "digits.h5", encoder="effnet-lite:lite0", progress=False)

    root = built_once(tmp_path_factory, "audit-planted", make)
    return root / "digits.h5", json.loads((root / "planted.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    from embedstore.datasets import write_digits
    from embedstore.ingest import build

    def make(root):
        folder = write_digits(root / "digits", per_class=40)  # 400 digits
        rng = np.random.default_rng(1)  # a seeded train/val/test split, so leaks across splits are looked for too
        files = sorted(folder.glob("*/*.png"))
        split = rng.choice(["train", "val", "test"], size=len(files), p=[0.7, 0.15, 0.15])
        man = root / "manifest.csv"
        man.write_text("path,label,split\n" + "".join(f"digits/{f.parent.name}/{f.name},{f.parent.name},{sp}\n"
                                                       for f, sp in zip(files, split)))
        build(man, root / "digits.h5", encoder="effnet-lite:lite0", progress=False)

    return built_once(tmp_path_factory, "audit-clean", make) / "digits.h5"


@pytest.fixture(scope="module")
def planted_audit(planted, tmp_path_factory):
    store, _ = planted

    def make(root):
        res = embed("audit", store, "--out", root / "issues.csv", "--json")
        assert res.exit_code == 0, res.output
        (root / "audit.json").write_text(res.output, encoding="utf-8")

    root = built_once(tmp_path_factory, "audit-planted-findings", make)
    return json.loads((root / "audit.json").read_text(encoding="utf-8")), root / "issues.csv"


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_planted_copies_and_leaks_are_found(planted, planted_audit):
    _, truth = planted
    report, out = planted_audit
    rows = _rows(out)
    by_kind: dict[str, set] = {}
    for r in rows:
        by_kind.setdefault(r["kind"], set()).add(r["id"])
    copies = {c for _, c in truth["near_pairs"]}
    leaks = {c for _, c in truth["leak_pairs"]}
    # each planted copy is reported as a duplicate or a leak of something (its original kept: a train copy or lowest id)
    flagged = by_kind.get("near_duplicate", set()) | by_kind.get("leak", set())
    found = {c for o, c in truth["near_pairs"] if c in flagged or o in flagged}
    assert len(found) >= 0.9 * len(copies), (len(found), len(copies))
    # leaks: the test-side copy of a training item, every one of the 20
    assert leaks <= by_kind.get("leak", set()), sorted(leaks - by_kind.get("leak", set()))
    assert report["leaks"]["by_split_pair"].get("train-test", 0) >= len(leaks)
    # few items that are not planted end up in duplicate clusters
    planted_items = {x for p in truth["near_pairs"] + truth["leak_pairs"] for x in p}
    wrong = (by_kind.get("near_duplicate", set()) | by_kind.get("leak", set())) - planted_items
    assert len(wrong) <= 0.15 * len(flagged), sorted(wrong)
    assert report["verdict"].startswith("worth a look")
    # the summary counts the rows it wrote: exact copies are counted once, as exact duplicates
    assert report["near_duplicates"]["removable"] == len(by_kind.get("near_duplicate", set()))
    assert report["exact_duplicates"]["removable"] == len(by_kind.get("exact_duplicate", set()))


def test_flipped_labels_are_suspected_with_the_suggested_true_label(planted, planted_audit):
    _, truth = planted
    report, out = planted_audit
    suspects = {r["id"]: r for r in _rows(out) if r["kind"] == "label_issue"}
    flipped = truth["flipped"]
    hit = [i for i in flipped if i in suspects]
    assert len(hit) >= 0.6 * len(flipped), (len(hit), len(flipped))
    assert len(hit) >= 0.5 * len(suspects), (len(hit), len(suspects))
    # the suggestion is the label before the flip for most of them
    right = [i for i in hit if f"suggested '{flipped[i]}'" in suspects[i]["detail"]]
    assert len(right) >= 0.8 * len(hit)
    li = report["label_issues"]
    assert li["folds"] == 5 and li["suspects"] == len(suspects) and 0.5 < li["out_of_fold_accuracy"] < 1.0


def test_clean_set_says_nothing_alarming_in_one_line(clean):
    res = embed("audit", clean)
    assert res.exit_code == 0, res.output
    last = res.output.strip().splitlines()[-1]
    assert last.startswith("nothing alarming"), res.output
    js = json.loads(embed("audit", clean, "--json").output)
    assert js["alarming"] == [] and js["exact_duplicates"]["clusters"] == 0
    assert set(js["counts"]) == {"train", "val", "test"}  # splits were there to leak across
    # natural look-alikes (one writer's digits) only: listed for review, under 5% of val/test items
    assert js["leaks"]["pairs"] <= 0.05 * js["leaks"]["later_items"], js["leaks"]


def test_exact_copies_cluster_with_the_training_copy_kept(tmp_path, build_tiny):
    src = tmp_path / "src"
    for i in range(12):
        write_image(src / f"img_{i:02d}.png", (40 + 15 * i, 90, 200 - 10 * i), seed=i)
    placeholder = write_image(src / "missing_0.png", (250, 250, 250), seed=999)
    for j in range(1, 5):
        shutil.copy(placeholder, src / f"missing_{j}.png")
    rows = [("src/img_%02d.png" % i, "a" if i % 2 else "b", "train") for i in range(12)]
    rows += [(f"src/missing_{j}.png", "b" if j == 4 else "a", "test" if j == 3 else "train") for j in range(5)]
    man = tmp_path / "m.csv"
    man.write_text("path,label,split\n" + "".join(f"{p},{lab},{s}\n" for p, lab, s in rows))
    build_tiny(man, tmp_path / "s.h5")
    res = embed("audit", tmp_path / "s.h5", "--out", tmp_path / "f.csv", "--no-labels", "--json")
    assert res.exit_code == 0, res.output
    r = json.loads(res.output)
    assert r["exact_duplicates"] == {"clusters": 1, "items": 5, "removable": 4, "label_conflicts": 1}
    found = _rows(tmp_path / "f.csv")
    dups = {x["id"] for x in found if x["kind"] == "exact_duplicate"}
    assert dups == {f"src/missing_{j}.png" for j in range(1, 5)}  # missing_0 (train, lowest id) kept
    # one copy filed under b, the rest under a: the same file answers two ways, and the audit says which
    (odd,) = [x for x in found if x["kind"] == "exact_duplicate" and "two labels" in x["detail"]]
    assert odd["id"] == "src/missing_4.png" and "labelled b, the kept copy a" in odd["detail"]
    assert "1 of them under different labels" in embed("audit", tmp_path / "s.h5", "--no-labels", "-q").stdout
    leak = [x for x in found if x["kind"] == "leak"]
    assert [x["id"] for x in leak] == ["src/missing_3.png"] and "train item src/missing_0.png" in leak[0]["detail"]
    assert r["leaks"]["by_split_pair"] == {"train-test": 1}
    # the page shows that cluster once: a near-duplicate cluster of exact copies only was listed again
    assert embed("audit", tmp_path / "s.h5", "--no-labels", "--report", tmp_path / "rep", "-q").exit_code == 0
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "<p>1 cluster(s), largest first" in page and page.count("KEEP src/missing_0.png") == 1


def test_outlier_scores_are_what_anomalies_knn_scores(clean, tmp_path):
    """One meaning through two doors: audit's isolation score is `anomalies --method knn`'s (k=5, mean,
    leave-one-out on items it was fitted on), with the opposite sign."""
    from embedstore.audit import run_audit
    from embedstore.detectors.anomalies import find_anomalies

    r = run_audit(clean, labels=False, outlier_share=0.05, progress=False)
    a, _ = find_anomalies(clean, "knn", progress=False)
    knn = {x["id"]: x["score"] for x in a.ranked}
    ours = {x["id"]: x["score"] for x in r.detail["outliers"]}
    assert len(ours) == 20  # 5% of the 400
    for i, s in ours.items():  # the same to float32 precision (float16 rows read back as unit vectors)
        assert knn[i] == pytest.approx(s, rel=2e-6, abs=2e-6)
    top_knn = [x["id"] for x in a.ranked[:10]]
    assert top_knn == [x["id"] for x in r.detail["outliers"][:10]]


def test_search_scores_are_the_cosines_of_the_stored_vectors_both_ways(clean):
    """The set stores float16 rows of lengths 1 +- ~1e-3: scores were a.b/|b|, so a->b and b->a
    differed in the 4th decimal and neither was the cosine. Both are now the cosine of the stored rows."""
    from embedstore.search.query import search
    from embedstore.store import open_store

    with open_store(clean) as st:
        vs = st.select_set()
        ids, X = zip(*st.iter_vectors(vs.name))
        raw = np.concatenate([b for _, b in st.rows(vs.name).slabs()])  # the rows as stored
    ids, X = [i for b in ids for i in b], np.concatenate(X)
    assert raw.dtype == np.float16
    raw = raw.astype(np.float64)
    lengths = np.linalg.norm(raw, axis=1)
    assert np.abs(lengths - 1).max() > 1e-5  # what made the scores asymmetric is there
    assert np.allclose(np.linalg.norm(X, axis=1), 1, atol=1e-6)
    unit = raw / lengths[:, None]
    for a in ids[:3]:
        hits = search(clean, item_id=a, k=3).hits
        for h in hits:
            back = {x["id"]: x["score"] for x in search(clean, item_id=h["id"], k=399).hits}
            want = float(unit[ids.index(a)] @ unit[ids.index(h["id"])])
            assert h["score"] == pytest.approx(want, abs=2e-6) and back[a] == pytest.approx(want, abs=2e-6)


def test_excluding_leaks_scores_the_test_split_without_them(planted, planted_audit, tmp_path):
    """The findings table feeds fit-head, build and anomalies; fit-head without the leaked test items
    is scored on exactly the test items that are not copies of training items."""
    store, truth = planted
    _, out = planted_audit
    leak_ids = {r["id"] for r in _rows(out) if r["kind"] == "leak"}
    base = json.loads(embed("fit-head", "logistic", "--store", store, "--json").output)
    res = embed("fit-head", "logistic", "--store", store, "--exclude", out, "--exclude-kinds", "leak", "--json")
    assert res.exit_code == 0, res.output
    fitted = json.loads(res.output)
    assert fitted["counts"]["test"] == base["counts"]["test"] - len(leak_ids)
    assert fitted["excluded"]["per_split"]["test"] == len(leak_ids)
    # the leaked copies were easy test items (their originals are in train): removing them lowers test accuracy or keeps it
    assert fitted["test"]["accuracy"] <= base["test"]["accuracy"] + 1e-9
    # build and anomalies read the same file
    res = embed("anomalies", "--store", store, "--exclude", out, "--exclude-kinds", "near_duplicate,leak", "--json")
    assert res.exit_code == 0, res.output
    an = json.loads(res.output)
    n_excl = len({r["id"] for r in _rows(out) if r["kind"] in ("near_duplicate", "leak")})
    assert an["fit_count"] == an["scored_count"] - n_excl
    res = embed("build", truth["manifest"], "--store", tmp_path / "again.h5", "--exclude", out, "--exclude-kinds", "leak",
                "--encoder", "test:tiny", "--json", "-q", "--workers", "0")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["vectors_in_set"] == an["scored_count"] - len(leak_ids)


def test_html_report_shows_clusters_leaks_and_suspects(planted, tmp_path):
    store, _ = planted
    res = embed("audit", store, "--report", tmp_path / "rep")
    assert res.exit_code == 0, res.output
    page = (tmp_path / "rep" / "index.html").read_text()
    for title in ("Summary", "Duplicate clusters", "Leaks across splits", "Suspected label errors", "Most isolated items",
                  "Class balance per split"):
        assert f"<h2>{title}</h2>" in page
    assert page.count("data:image/png;base64,") >= 60
    assert "KEEP " in page and " -&gt; " in page


@pytest.mark.parametrize("args, message", [
    (["-k", "1"], "-k must be at least 2"),
    (["--threshold", "1.5"], "--threshold is a cosine"),
    (["--outliers", "0.7"], "--outliers must be a share"),
    (["--out", "x.txt"], "write a .csv or a .parquet"),
    (["--set", "nope"], "nope"),
    (["--max-memory", "lots"], "--max-memory must look like"),
])
def test_bad_options_fail_in_one_line(clean, args, message):
    res = embed("audit", clean, *args)
    assert res.exit_code != 0
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], res.output


def test_missing_store_fails_in_one_line(tmp_path):
    res = embed("audit", tmp_path / "none.h5")
    assert res.exit_code != 0 and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "none.h5").exists()


def test_label_check_skips_with_a_reason_over_the_memory_budget(clean):
    res = embed("audit", clean, "--max-memory", "1MB", "--json")
    assert res.exit_code == 0, res.output
    assert "over --max-memory 1MB" in json.loads(res.output)["label_issues"]["skipped"]


def test_server_audit_answers_as_the_cli_does(planted, planted_audit):
    """The same audit through the server's JSON door as through `embed audit --json`; no file paths."""
    from embedstore.serve.server import open_api

    store, _ = planted
    cli, _ = planted_audit
    api = open_api(store)
    rep = api.handle("GET", "/api/audit")
    assert rep.status == 200, rep.body
    js = rep.json()
    for key in ("items", "exact_duplicates", "near_duplicates", "leaks", "alarming", "verdict"):
        assert js[key] == cli[key], key
    assert js["label_issues"]["suspects"] == cli["label_issues"]["suspects"]
    assert len(js["leak_pairs"]) == cli["leaks"]["pairs"] and js["store"] == store.name
    # the findings themselves, the same on both doors (the CLI's JSON had only their counts)
    for key in ("clusters", "leak_pairs", "suspects", "outliers"):
        assert len(cli[key]) == len(js[key]), key
    assert [x["id"] for x in cli["suspects"]] == [x["id"] for x in js["suspects"]] and cli["suspects"]
    assert cli["leak_pairs"] == js["leak_pairs"] and cli["clusters"] == js["clusters"]
    assert "uri" in cli["suspects"][0] and "uri" not in js["suspects"][0]  # file paths stay on the server
    assert str(store.parent) not in rep.body.decode()
    page = api.handle("GET", "/audit")
    assert page.status == 200 and "text/html" in page.headers["content-type"]
    html = page.body.decode()
    assert "<h2>Leaks across splits</h2>" in html and 'src="/api/thumb/' in html and str(store.parent) not in html
    assert "script-src" not in page.headers["content-security-policy"]


def test_audit_page_in_headless_chromium(planted, tmp_path):
    """The report as a person sees it: clusters side by side, leaks as pairs, mislabels with given ->
    suggested, as a file and on the running server (reached from the store's page); screenshots go to
    test-artifacts/audit-report.png and audit-served.png."""
    from test_serve import headless_chromium

    store, _ = planted
    assert embed("audit", store, "--report", tmp_path / "rep").exit_code == 0
    driver = headless_chromium("1280,1600")
    from selenium.webdriver.common.by import By

    try:
        driver.get((tmp_path / "rep" / "index.html").as_uri())
        heads = [h.text for h in driver.find_elements(By.TAG_NAME, "h2")]
        assert heads[:3] == ["Summary", "Duplicate clusters", "Leaks across splits"]
        imgs = driver.find_elements(By.CSS_SELECTOR, ".card img")
        loaded = [im for im in imgs[:40] if driver.execute_script("return arguments[0].naturalWidth", im) > 0]
        assert len(loaded) == min(40, len(imgs)) and len(imgs) >= 60
        art = Path(__file__).resolve().parents[1] / "test-artifacts"
        art.mkdir(exist_ok=True)
        driver.save_screenshot(str(tmp_path / "audit.png"))
        shutil.copy(tmp_path / "audit.png", art / "audit-report.png")
        assert (art / "audit-report.png").stat().st_size > 10_000
        from embedstore.serve.server import make_server, open_api

        srv = make_server(open_api(store), "127.0.0.1", 0).start()
        try:
            from selenium.webdriver.support.ui import WebDriverWait

            driver.get(f"http://127.0.0.1:{srv.port}/")
            driver.find_element(By.ID, "audit-link").click()
            WebDriverWait(driver, 120).until(lambda d: "Leaks across splits" in d.page_source)
            imgs = driver.find_elements(By.CSS_SELECTOR, ".card img")[:12]
            WebDriverWait(driver, 60).until(lambda d: all(d.execute_script(
                "return arguments[0].complete && arguments[0].naturalWidth > 0", im) for im in imgs))
            assert driver.find_element(By.TAG_NAME, "h2").text == "Summary"
            driver.save_screenshot(str(art / "audit-served.png"))
        finally:
            srv.stop()
    finally:
        driver.quit()


def test_a_kind_the_findings_table_lacks_is_refused_not_ignored(planted, planted_audit):
    store, _ = planted
    _, out = planted_audit
    for cmd in (["fit-head", "logistic", "--store", store], ["anomalies", "--store", store]):
        res = embed(*cmd, "--exclude", out, "--exclude-kinds", "duplicate")
        assert res.exit_code != 0
        line = res.output.strip().splitlines()
        assert len(line) == 1 and "no rows of kind duplicate" in line[0] and "near_duplicate" in line[0], res.output


def test_an_audit_kind_with_no_rows_is_nothing_to_exclude_not_an_error(planted, tmp_path):
    """A clean dataset's audit has no leak or label_issue rows: the README's pipeline goes on and says so."""
    store, _ = planted
    (tmp_path / "clean.csv").write_text("id,kind,score,detail\nnothing/here.png,outlier,0.9,far from the rest\n")
    for cmd in (["fit-head", "logistic", "--store", store, "--json", "-q"], ["anomalies", "--store", store, "--json", "-q"]):
        res = embed(*cmd, "--exclude", tmp_path / "clean.csv", "--exclude-kinds", "leak,label_issue")
        assert res.exit_code == 0, res.output
        assert "no rows of kind label_issue, leak: nothing of that kind to leave out" in res.output


def test_text_store_flags_copies_not_same_topic_reviews(tmp_path):
    """Sentence encoders put reviews of one drug close together; the audit must not call them copies.
    An exact copy across train/test is a leak (by hash), and the page shows the texts."""
    drugs = ["ibuprofen", "melatonin", "sertraline", "metformin", "lisinopril", "cetirizine", "omeprazole", "amoxicillin"]
    say = ["{} worked well for me within a week and I had no side effects at all",
           "after a month on {} I felt worse, with headaches and trouble sleeping",
           "my doctor switched me to {} and honestly it changed nothing for my symptoms",
           "I would not recommend {}: the nausea was constant and it cost too much"]
    rows = []
    for i, d in enumerate(drugs):
        for j, t in enumerate(say):
            rows.append((f"r{i}{j}", t.format(d), "pos" if j == 0 else "neg", "train" if (i + j) % 3 else "test"))
    rows.append(("copy", rows[1][1], rows[1][2], "test"))  # a training review again, in test
    with open(tmp_path / "reviews.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "text", "label", "split"])
        w.writerows(rows)
    res = embed("build", tmp_path / "reviews.csv", "--store", tmp_path / "r.h5", "--encoder", "st:all-MiniLM-L6-v2", "-q")
    assert res.exit_code == 0, res.output
    res = embed("audit", tmp_path / "r.h5", "--out", tmp_path / "f.csv", "--report", tmp_path / "rep", "--no-labels", "--json")
    assert res.exit_code == 0, res.output
    r = json.loads(res.output)
    found = _rows(tmp_path / "f.csv")
    assert {x["id"] for x in found if x["kind"] == "leak"} == {"copy"}
    assert {x["id"] for x in found if x["kind"] in ("near_duplicate", "exact_duplicate")} <= {"copy"}
    assert r["exact_duplicates"]["clusters"] == 1 and "texts: no ratio test" in r["calibration"]["how"]
    assert r["near_duplicates"]["removable"] == len([x for x in found if x["kind"] == "near_duplicate"])
    page = (tmp_path / "rep" / "index.html").read_text()
    assert 'class="card text"' in page and "trouble sleeping" in page and "(unreadable)" not in page


def test_a_set_built_without_normalisation_is_refused_in_one_line(tmp_path, image_folder, build_tiny):
    build_tiny(image_folder, tmp_path / "raw.h5", normalize="none")
    before = (tmp_path / "raw.h5").read_bytes()
    res = embed("audit", tmp_path / "raw.h5", "--out", tmp_path / "f.csv")
    assert res.exit_code != 0
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and "--normalize none" in lines[0] and "--normalize l2" in lines[0], res.output
    assert not (tmp_path / "f.csv").exists() and (tmp_path / "raw.h5").read_bytes() == before


def test_label_check_forks_no_process(monkeypatch):
    """cleanlab's pruning runs in this process (n_jobs=1): a pool forked from the server's threaded
    process can inherit a held lock, and /api/audit once hung for good in such a child."""
    import multiprocessing.pool

    from embedstore.audit.labels import find_label_issues

    def no_pool(*a, **kw):
        raise AssertionError("the label check started a process pool")

    monkeypatch.setattr(multiprocessing.pool.Pool, "__init__", no_pool)
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(c, 0.3, size=(30, 8)) for c in range(4)]).astype(np.float32)
    y = np.repeat(np.array(["a", "b", "c", "d"]), 30)
    y[[0, 31]] = ["b", "a"]  # two flipped labels
    li = find_label_issues(X, y, np.arange(len(y)))
    assert {0, 31} <= set(li.rows.tolist())


def test_items_without_a_label_are_counted_not_taken_for_a_class(tmp_path):
    """Blank labels: audit's balance line counted '(unlabelled)' as a fifth class, and info and
    fit-head dropped those items without saying how many."""
    from embedstore.heads.fit import fit_head
    from embedstore.ingest import build

    rows = [f"word{i % 7} thing{i} a{i % 3},{('red', 'blue')[i % 2] if i % 5 else ''}" for i in range(40)]
    (tmp_path / "t.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    build(tmp_path / "t.csv", tmp_path / "t.h5", encoder="test:hash-text", progress=False)
    info = json.loads(embed("info", tmp_path / "t.h5", "--json").output)
    assert info["unlabelled"] == 8 and sum(info["labels"].values()) == 32
    assert "; 8 item(s) without a label (left out of heads)" in embed("info", tmp_path / "t.h5").output
    rep, _ = fit_head(tmp_path / "t.h5", "logistic", progress=False)
    assert sum(rep.counts.values()) == 32 and any(n.startswith("8 item(s) of") and "no label" in n for n in rep.notes)
    out = embed("audit", tmp_path / "t.h5", "-q").output
    assert "  balance: 2 classes" in out and "8 item(s) without a label" in out, out
    assert "items; no split column" in out and "(none)" not in out  # it printed "(none) 40" and "balance in (none)"


def test_an_unlabelled_set_is_not_called_balanced_and_lists_its_most_isolated_item(tmp_path, build_tiny):
    """A flat folder: nothing to call balanced, and no splits to leak between; 1% of 20 items rounds
    to none, so the single most isolated item is listed rather than "the 0 most isolated items"."""
    for i in range(20):
        write_image(tmp_path / "flat" / f"img_{i:02d}.png", (40 + 9 * i, 90, 200 - 8 * i), seed=i)
    build_tiny(tmp_path / "flat", tmp_path / "f.h5", labels=False)
    res = embed("audit", tmp_path / "f.h5")
    assert res.exit_code == 0, res.output
    last = res.output.strip().splitlines()[-1]
    assert last.startswith("nothing alarming") and "balanced" not in last and "leaks" not in last, res.output
    assert "no labels, so no label checks" in last
    assert "outliers: the 1 most isolated item(s) of 20 listed" in res.output, res.output


def test_label_suspects_from_a_classifier_no_better_than_the_majority_class_are_inconclusive(tmp_path, build_tiny):
    """On a text store whose classifier was near chance (out-of-fold accuracy 0.48, three classes),
    the verdict was 'worth a look: 57 suspected label error(s) (47.5%)'. Labels that the vectors do
    not predict say nothing of errors in them: the verdict calls those suspects inconclusive."""
    src = tmp_path / "src"
    for i in range(36):  # one colour, labels drawn at random: nothing in the vectors predicts them
        write_image(src / ("abc"[i % 3]) / f"img_{i:02d}.png", (128, 128, 128), seed=i)
    build_tiny(src, tmp_path / "s.h5")
    r = json.loads(embed("audit", tmp_path / "s.h5", "--json").output)
    li = r["label_issues"]
    assert li["inconclusive"] and li["majority_share"] == pytest.approx(1 / 3)
    if li["suspects"]:
        assert "suspected label error" not in r["verdict"] and "inconclusive" in r["verdict"], r["verdict"]
    out = embed("audit", tmp_path / "s.h5", "-q").stdout
    assert "inconclusive: not clearly above always answering the majority class (0.3333)" in out
