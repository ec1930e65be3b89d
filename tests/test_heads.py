"""fit-head / predict / evaluate through the CLI and the library, including every error path."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import copy_store, embed, make_image_folder, write_image

CLASSES = ("cat", "dog", "owl")



def build_store(src: Path, store: Path, **kw):
    from embedstore.ingest import build

    opts = dict(encoder="test:tiny", workers=0, precision="fp32", progress=False, batch_size=16, shard_rows=16)
    opts.update(kw)
    return build(src, store, **opts)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    root = tmp_path_factory.mktemp("heads")
    src = make_image_folder(root / "photos", classes=CLASSES, per_class=14)
    build_store(src, root / "photos.h5")
    return root


def test_fit_head_logistic_saves_a_head_that_predicts_and_evaluates(labelled, tmp_path):
    out = tmp_path / "head"
    r = embed("fit-head", "logistic", "--store", labelled / "photos.h5", "--out", out, "--json", "--plots", tmp_path / "plots")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["classes"] == list(CLASSES)
    assert rep["counts"]["train"] + rep["counts"]["val"] + rep["counts"]["test"] == 42
    assert len(rep["curve"]) >= 8 and rep["chosen"] in [c["value"] for c in rep["curve"]]
    assert min(c["value"] for c in rep["curve"]) <= 1e-4 and max(c["value"] for c in rep["curve"]) >= 1e4
    assert rep["test"]["accuracy"] >= 0.8  # colours are easy to tell apart
    assert set(rep["test"]["per_class"]) == set(CLASSES)
    assert (tmp_path / "plots" / "confusion.png").stat().st_size > 1000
    doc = json.loads((out / "head.json").read_text())
    assert doc["provenance"]["encoder"] == "test:tiny" and doc["kind"] == "logistic"

    new = make_image_folder(tmp_path / "new", classes=CLASSES, per_class=3, seed=7)
    r = embed("predict", out, new, "--out", tmp_path / "pred.csv", "-q")
    assert r.exit_code == 0, r.output
    lines = (tmp_path / "pred.csv").read_text().splitlines()
    assert lines[0].startswith("id,uri,label,prob,p_cat,p_dog,p_owl")
    assert len(lines) == 1 + 9
    right = sum(line.split(",")[0].split("/")[0] == line.split(",")[2] for line in lines[1:])
    assert right >= 7
    probs = np.array([[float(x) for x in line.split(",")[4:7]] for line in lines[1:]])
    assert np.allclose(probs.sum(1), 1, atol=1e-4)

    r = embed("evaluate", out, "--store", labelled / "photos.h5", "--json")
    assert r.exit_code == 0, r.output
    ev = json.loads(r.output)  # the head saw train + val: those are counted, said, and left out of the metrics
    assert ev["seen_in_training"] == rep["counts"]["train"] + rep["counts"]["val"] == rep["seen_items"]
    assert ev["n"] == rep["counts"]["test"] and ev["accuracy"] == pytest.approx(rep["test"]["accuracy"])
    assert "leave them out" in ev["notes"][0]

    # --test-fraction 0: trained on everything given; evaluating it on the same store says so loudly
    r = embed("fit-head", "logistic", "--store", labelled / "photos.h5", "--out", tmp_path / "all", "--test-fraction", 0, "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["counts"]["test"] == 0 and rep["test"] == {} and rep["seen_items"] == 42
    assert any("--test-fraction 0" in n for n in rep["notes"])
    r = embed("evaluate", tmp_path / "all", "--store", labelled / "photos.h5")
    assert r.exit_code == 0 and "overstate" in r.output and "items the head was fitted or selected on" in r.output


def test_seen_items_are_found_by_content_under_any_id(labelled, tmp_path):
    """Copies of training files in a new folder are still items the head saw: predict flags them
    and its accuracy leaves them out; fit-head prints every metric with its interval and split."""
    import shutil

    out = tmp_path / "head"
    r = embed("fit-head", "logistic", "--store", labelled / "photos.h5", "--out", out)
    assert r.exit_code == 0, r.output
    assert "test (never seen by the head): accuracy" in r.output and "95% CI" in r.output and "test split" in r.output
    new = tmp_path / "mixed"
    for k, f in enumerate(sorted((labelled / "photos" / "cat").iterdir())[:4]):
        (new / "cat").mkdir(parents=True, exist_ok=True)
        shutil.copy(f, new / "cat" / f"copy{k}.png")
    make_image_folder(new, classes=("dog",), per_class=3, seed=9)
    r = embed("predict", out, new, "--json", "-q")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    from embedstore.modelfile import load_head

    head, doc = load_head(out)
    seen_here = sum(row["seen_in_training"] for row in rep["rows"])
    assert rep["seen_in_training"] == seen_here and 1 <= seen_here <= 4  # the copies of train/val files
    # the CSV carries the same per-row flag and the true label
    r = embed("predict", out, new, "--out", tmp_path / "p.csv", "-q")
    import csv

    with open(tmp_path / "p.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert {row["id"]: row["seen_in_training"] for row in table} == {
        row["id"]: str(row["seen_in_training"]).lower() for row in rep["rows"]}
    assert {row["true_label"] for row in table} == {"cat", "dog"}
    assert rep["judged"] == 7 - seen_here


@pytest.mark.parametrize("head", ["linear-svm", "ridge", "knn", "mlp"])
def test_every_head_trains_saves_and_reloads_identically(labelled, tmp_path, head):
    from embedstore.heads.fit import fit_head
    from embedstore.modelfile import load_head
    from embedstore.store import open_store

    rep, fitted = fit_head(labelled / "photos.h5", head, out=tmp_path / head, progress=False)
    assert rep.test["accuracy"] >= 0.8
    loaded, doc = load_head(tmp_path / head)
    with open_store(labelled / "photos.h5") as st:
        X = st.rows(st.select_set().name).load()
    np.testing.assert_allclose(loaded.predict_proba(X), fitted.predict_proba(X), rtol=1e-6, atol=1e-8)
    assert doc["sweep"]["param"] == fitted.sweep_param


def test_shots_train_on_k_items_per_class(labelled, tmp_path):
    from embedstore.modelfile import load_head

    r = embed("fit-head", "knn", "--store", labelled / "photos.h5", "--shots", 2, "--out", tmp_path / "knn", "--json", "-q")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    shots = 2 * len(CLASSES)
    assert rep["counts"]["train"] == shots and rep["counts"]["val"] > 0
    assert "2 shots" in rep["split_how"] and rep["fitted_on"] == ["train"]
    # the saved head holds the shots alone (validation items only chose k), and no k above a class's
    # shots: a larger k lets the other classes outvote one wherever it lies
    head, doc = load_head(tmp_path / "knn")
    assert head.fit_vectors_.shape[0] == shots and head.k <= 2
    assert sorted(c["value"] for c in rep["curve"]) == [1, 2]
    assert any("k swept up to 2, the items of the smallest class" in n for n in rep["notes"])
    assert doc["seen"]["fitted_on"] == ["train"] and doc["seen"]["items"] == rep["counts"]["train"] + rep["counts"]["val"]
    r = embed("fit-head", "logistic", "--store", labelled / "photos.h5", "--shots", 2, "--json", "-q")
    rep = json.loads(r.output)
    assert rep["fitted_on"] == ["train"] and "on the validation split" in rep["selection"]
    assert any("fitted on the %d shots alone" % shots in n for n in rep["notes"])
    rep = json.loads(embed("fit-head", "logistic", "--store", labelled / "photos.h5", "--json", "-q").output)
    assert rep["fitted_on"] == ["train", "val"]


def _split_manifest_rows(tmp_path, val_name: str = "val") -> list[str]:
    """8 images a class as a manifest's rows: 5 train, 1 `val_name`, 2 test."""
    rows = ["path,label,split"]
    for c_i, c in enumerate(CLASSES):
        for i in range(8):
            write_image(tmp_path / "img" / f"{c}{i}.png", (60 + 70 * c_i, 200 - 60 * c_i, 90), seed=c_i * 10 + i)
            rows.append(f"img/{c}{i}.png,{c},{'train' if i < 5 else val_name if i < 6 else 'test'}")
    return rows


def test_store_split_column_is_used(tmp_path):
    (tmp_path / "m.csv").write_text("\n".join(_split_manifest_rows(tmp_path)) + "\n")
    build_store(tmp_path / "m.csv", tmp_path / "m.h5")
    r = embed("fit-head", "ridge", "--store", tmp_path / "m.h5", "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["counts"] == {"train": 15, "val": 3, "test": 6}
    assert rep["split_how"].startswith("the store's split column")


def test_labelled_items_without_a_split_are_said_to_be_unused(tmp_path):
    """A split column that some rows leave empty: those labelled items were dropped without a word
    (an unknown split name was reported). The counts and the summary say so, in text and JSON."""
    rows = _split_manifest_rows(tmp_path)
    rows = rows[:1] + [r if i % 3 else r.rsplit(",", 1)[0] + "," for i, r in enumerate(rows[1:])]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    blank = sum(1 for r in rows[1:] if r.endswith(","))
    build_store(tmp_path / "m.csv", tmp_path / "m.h5")
    r = embed("fit-head", "ridge", "--store", tmp_path / "m.h5", "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert sum(rep["counts"].values()) == 24 - blank
    assert f"({blank} labelled item(s) have no split and are not used" in rep["split_how"]
    assert f"{blank} labelled item(s) have no split" in embed("fit-head", "ridge", "--store", tmp_path / "m.h5").stdout


def test_a_class_with_no_training_items_in_the_split_column(tmp_path):
    """The store's split column puts every item of a class outside train: with one class left to
    learn, a one-line refusal naming the class (it was an unexpected ValueError from scikit-learn);
    with two or more, the head trains and the summary names the class it cannot predict."""
    rows = _split_manifest_rows(tmp_path)
    only_cat = [r if not r.endswith(",train") or ",cat," in r else r.rsplit(",", 1)[0] + ",test" for r in rows]
    (tmp_path / "one.csv").write_text("\n".join(only_cat) + "\n")
    build_store(tmp_path / "one.csv", tmp_path / "one.h5")
    r = embed("fit-head", "logistic", "--store", tmp_path / "one.h5")
    assert r.exit_code == 2 and r.stderr.startswith("error: the store's split column gives training items of one class only ('cat')")
    no_owl = [r if not r.endswith(",train") or f",{CLASSES[2]}," not in r else r.rsplit(",", 1)[0] + ",test" for r in rows]
    (tmp_path / "two.csv").write_text("\n".join(no_owl) + "\n")
    build_store(tmp_path / "two.csv", tmp_path / "two.h5")
    r = embed("fit-head", "logistic", "--store", tmp_path / "two.h5", "--json")
    assert r.exit_code == 0, r.output
    assert f"class '{CLASSES[2]}' has no training items: the head cannot predict it" in json.loads(r.stdout)["split_how"]


def test_a_test_item_with_a_training_items_content_is_not_scored_as_unseen(tmp_path):
    """fit-head's test score and `embed evaluate` on the test split agree on what the head saw."""
    import shutil

    rows = _split_manifest_rows(tmp_path, "valid")
    shutil.copy(tmp_path / "img" / f"{CLASSES[0]}0.png", tmp_path / "img" / "copy.png")  # a train item's bytes, in test
    rows.append(f"img/copy.png,{CLASSES[0]},test")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    build_store(tmp_path / "m.csv", tmp_path / "m.h5")
    r = embed("fit-head", "logistic", "--store", tmp_path / "m.h5", "--out", tmp_path / "head", "--json",
              "--report", tmp_path / "rep")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["counts"]["test"] == 6 and rep["test"]["n"] == 6
    assert any("1 test item(s) have the content of a train or val item" in n for n in rep["notes"])
    page = (tmp_path / "rep" / "index.html").read_text()  # the page says so too (its counts did not add up)
    assert "note: 1 test item(s) have the content of a train or val item" in page
    ev = json.loads(embed("evaluate", tmp_path / "head", "--store", tmp_path / "m.h5", "--split", "test", "--json").output)
    assert ev["seen_in_training"] == 1 and ev["n"] == rep["test"]["n"] and ev["accuracy"] == rep["test"]["accuracy"]
    # the manifest says "valid": --split val finds it (another name of the same split); an unknown split lists them
    ev = json.loads(embed("evaluate", tmp_path / "head", "--store", tmp_path / "m.h5", "--split", "val", "--json").output)
    assert ev["seen_in_training"] == len(CLASSES) and ev["n"] == len(CLASSES)
    r = embed("evaluate", tmp_path / "head", "--store", tmp_path / "m.h5", "--split", "holdout2")
    assert r.exit_code != 0 and "splits are: test, train, valid" in r.output


def test_logistic_out_of_core_matches_in_memory(labelled):
    from embedstore.heads.fit import fit_head

    # in memory this is scikit-learn's lbfgs, streamed the torch solver: a tight tol makes both reach the optimum
    mem, h_mem = fit_head(labelled / "photos.h5", "logistic", params={"C": 10.0, "tol": 1e-7}, progress=False)
    ooc, h_ooc = fit_head(labelled / "photos.h5", "logistic", params={"C": 10.0, "tol": 1e-7}, max_memory="1KB",
                          progress=False)
    assert mem.in_memory and not ooc.in_memory
    np.testing.assert_allclose(h_ooc.coef_, h_mem.coef_, atol=2e-3 * np.abs(h_mem.coef_).max())
    assert ooc.test["accuracy"] == mem.test["accuracy"]


def test_in_memory_only_head_refuses_over_budget(labelled):
    r = embed("fit-head", "knn", "--store", labelled / "photos.h5", "--max-memory", "1KB")
    assert r.exit_code == 2
    assert "trains in memory only" in r.output and "logistic or ridge" in r.output


# ---- error paths ---------------------------------------------------------------------------------

def test_store_without_labels(tmp_path):
    make_image_folder(tmp_path / "flat", classes=("x",), per_class=4)
    flat = tmp_path / "flatter"
    flat.mkdir()
    for f in (tmp_path / "flat" / "x").iterdir():
        f.rename(flat / f.name)
    build_store(flat, tmp_path / "s.h5", labels=False)
    r = embed("fit-head", "logistic", "--store", tmp_path / "s.h5")
    assert r.exit_code == 2 and "no labelled items" in r.output


def test_single_class(tmp_path):
    make_image_folder(tmp_path / "one", classes=("cat",), per_class=5)
    build_store(tmp_path / "one", tmp_path / "s.h5")
    r = embed("fit-head", "logistic", "--store", tmp_path / "s.h5")
    assert r.exit_code == 2 and "only one class" in r.output


def test_many_classes_too_small_to_split_make_one_short_line():
    from embedstore.errors import HeadError
    from embedstore.heads.splits import assign_splits

    labels = np.array([f"class{i:02d}" for i in range(60)])
    with pytest.raises(HeadError) as e:
        assign_splits(labels, np.array([""] * 60), 0.15, 0.15, 0)
    assert "'class00' (1), 'class01' (1)" in str(e.value) and "and 55 more of the 60 classes" in str(e.value)
    assert len(str(e.value)) < 300


def test_class_too_small_to_split(tmp_path):
    make_image_folder(tmp_path / "p", classes=("cat", "dog"), per_class=6)
    for f in sorted((tmp_path / "p" / "dog").iterdir())[2:]:
        f.unlink()
    build_store(tmp_path / "p", tmp_path / "s.h5")
    r = embed("fit-head", "logistic", "--store", tmp_path / "s.h5")
    assert r.exit_code == 2 and "class 'dog' (2) has too few" in r.output and "or --exclude its ids (`embed ls STORE --where label=NAME`)" in r.output


def test_shots_more_than_a_class_has(labelled):
    r = embed("fit-head", "logistic", "--store", labelled / "photos.h5", "--shots", 50)
    assert r.exit_code == 2 and "lower --shots" in r.output


@pytest.mark.parametrize("damage", ["inf", "nan"])
def test_non_finite_or_missing_vectors(labelled, tmp_path, damage):
    """Bytes changed in a shard behind the store's back: its checksum refuses them (a reader never
    moves the shard aside or drops its rows; `embed verify --repair` and `embed build` do)."""
    message = "is damaged (vector bytes do not match their checksum)"
    st = copy_store(labelled / "photos.h5", tmp_path / "s.h5")
    shard = sorted((tmp_path / "s.h5.d" / "shards").rglob("*.h5"))[0]  # one of three shards
    with h5py.File(shard, "r+") as f:
        f["vectors"][0] = np.inf if damage == "inf" else np.nan
    r = embed("fit-head", "logistic", "--store", st)
    assert r.exit_code == 2 and message in r.output and len(r.output.strip().splitlines()) == 1
    assert shard.exists()  # still there for verify --repair to move


def test_head_with_store_from_other_encoder_settings(labelled, tmp_path):
    assert embed("fit-head", "ridge", "--store", labelled / "photos.h5", "--out", tmp_path / "h", "-q").exit_code == 0
    other = tmp_path / "other.h5"
    build_store(make_image_folder(tmp_path / "o", classes=CLASSES, per_class=2), other, normalize="none")
    for args in (["evaluate", tmp_path / "h", "--store", other], ["predict", tmp_path / "h", other]):
        r = embed(*args)
        assert r.exit_code == 2, r.output
        assert "trained on other vectors" in r.output and "normalize" in r.output


@pytest.mark.parametrize("damage", ["tamper", "truncate", "foreign", "missing-arrays", "pickle"])
def test_damaged_head_files_fail_safely(labelled, tmp_path, damage):
    h = tmp_path / "h"
    assert embed("fit-head", "ridge", "--store", labelled / "photos.h5", "--out", h, "-q").exit_code == 0
    arrays = h / json.loads((h / "head.json").read_text())["arrays_file"]
    if damage == "tamper":
        data = bytearray(arrays.read_bytes())
        data[len(data) // 2] ^= 0xFF
        arrays.write_bytes(bytes(data))
    elif damage == "truncate":
        arrays.write_bytes(arrays.read_bytes()[:100])
    elif damage == "foreign":
        (h / "head.json").write_text(json.dumps({"format": "something-else"}))
    elif damage == "missing-arrays":
        arrays.unlink()
    else:  # an object array would need pickle to load: refused even with a matching sha256
        import hashlib

        from embedstore.modelfile import content_sha256

        np.savez(arrays, coef_=np.array([object()], dtype=object), intercept_=np.zeros(3), temperature_=np.ones(()))
        doc = json.loads((h / "head.json").read_text())
        doc["arrays_sha256"] = hashlib.sha256(arrays.read_bytes()).hexdigest()
        doc["content_sha256"] = content_sha256(doc)
        (h / "head.json").write_text(json.dumps(doc))
    r = embed("evaluate", h, "--store", labelled / "photos.h5")
    assert r.exit_code == 2, r.output
    assert r.output.startswith("error: ") and len(r.output.strip().splitlines()) == 1


def test_fit_head_argument_errors(labelled, tmp_path):
    s = labelled / "photos.h5"
    cases = [
        (["fit-head", "logistc", "--store", s], "did you mean logistic"),
        (["fit-head", "logistic", "--store", tmp_path / "nope.h5"], "does not exist"),
        (["fit-head", "logistic", "--store", s, "--param", "C"], "NAME=VALUE"),
        (["fit-head", "logistic", "--store", s, "--param", "foo=1"], "--param foo: the logistic head has no such parameter; it takes"),
        (["fit-head", "logistic", "--store", s, "--param", "C=abc"], "--param C=abc: C takes a number"),
        (["fit-head", "mlp", "--store", s, "--param", "hidden=0"], "--param hidden=0: hidden must be positive"),
        (["fit-head", "knn", "--store", s, "--param", "k=2.5"], "k takes a whole number"),
        (["fit-head", "logistic", "--store", s, "--param", "C=10", "--grid", "0.1,1"], "fixes the value --grid would sweep"),
        (["fit-head", "logistic", "--store", s, "--grid", "0.1,0"], "--grid value 0 (C): C must be positive"),
        (["fit-head", "logistic", "--store", s, "--grid", "nan"], "--grid value nan (C): C must be a finite number"),
        (["fit-head", "linear-svm", "--store", s, "--grid", "-1,1"], "--grid value -1 (C): C must be positive"),
        (["fit-head", "knn", "--store", s, "--grid", "3,4.5"], "--grid value 4.5 (k): k takes a whole number"),
        (["fit-head", "logistic", "--store", s, "--param", "C=inf"], "--param C=inf: C must be a finite number"),
        (["fit-head", "logistic", "--store", s, "--seed", "-1"], "invalid value for '--seed'"),
        (["fit-head", "logistic", "--store", s, "--val-fraction", "1.5"], "--val-fraction must be at least 0 and below 1"),
        (["fit-head", "logistic", "--store", s, "--test-fraction", "-0.1"], "--test-fraction must be at least 0"),
        (["fit-head", "logistic", "--store", s, "--max-memory", "lots"], "--max-memory"),
        (["fit-head", "logistic", "--store", s, "--set", "open_clip:ViT-B-32"], "no vector set"),
        (["predict", tmp_path / "nohead", labelled / "photos"], "does not exist"),
        (["predict", tmp_path, labelled / "photos"], "not a saved head"),
    ]
    for args, message in cases:
        r = embed(*args)
        assert r.exit_code != 0, (args, r.output)
        assert message in r.output, (args, r.output)
        assert "unexpected" not in r.output and "%|" not in r.output, (args, r.output)  # before any sweep, not mid-way


def test_out_exists_needs_force_and_old_head_survives(labelled, tmp_path):
    h = tmp_path / "h"
    assert embed("fit-head", "ridge", "--store", labelled / "photos.h5", "--out", h, "-q").exit_code == 0
    before = (h / "head.json").read_text()
    r = embed("fit-head", "logistic", "--store", labelled / "photos.h5", "--out", h)
    assert r.exit_code == 2 and "--force" in r.output
    assert (h / "head.json").read_text() == before
    assert embed("fit-head", "logistic", "--store", labelled / "photos.h5", "--out", h, "--force", "-q").exit_code == 0
    assert json.loads((h / "head.json").read_text())["kind"] == "logistic"
    assert [p.name for p in tmp_path.iterdir()] == ["h"]  # no temporary folders left behind
    arrays_file = json.loads((h / "head.json").read_text())["arrays_file"]
    assert sorted(p.name for p in h.iterdir()) == sorted([arrays_file, "head.json"])  # the old arrays are gone


def test_predict_bad_out_and_quarantined_items(labelled, tmp_path):
    h = tmp_path / "h"
    assert embed("fit-head", "ridge", "--store", labelled / "photos.h5", "--out", h, "-q").exit_code == 0
    r = embed("predict", h, labelled / "photos", "--out", tmp_path / "p.txt")
    assert r.exit_code == 2 and ".csv" in r.output
    new = make_image_folder(tmp_path / "new", classes=CLASSES, per_class=1)
    (new / "cat" / "broken.jpg").write_bytes(b"")
    r = embed("predict", h, new, "--out", tmp_path / "p.json", "-q")
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "p.json").read_text())
    broken = [x for x in rows if x["id"] == "cat/broken.jpg"]
    assert broken and broken[0]["status"] == "quarantined" and "empty" in broken[0]["reason"]
    assert sum(x["status"] == "ok" for x in rows) == 3
    r = embed("predict", h, new, "--out", tmp_path / "p.parquet", "-q")  # the same rows, typed
    assert r.exit_code == 0, r.output
    import pyarrow.parquet as pq

    t = pq.read_table(tmp_path / "p.parquet").to_pylist()
    assert [(x["id"], x["label"], x["status"]) for x in t] == [(x["id"], x["label"] or "", x["status"]) for x in rows]
    ok = [x for x in t if x["status"] == "ok"]
    assert all(abs(x["prob"] - max(x[f"p_{c}"] for c in CLASSES)) < 1e-9 for x in ok) and broken[0]["id"] in {x["id"] for x in t}
    assert {x["seen_in_training"] for x in ok} <= {True, False} and next(x for x in t if x["id"] == "cat/broken.jpg")["prob"] is None


def test_renamed_store_still_reads_its_vectors(labelled, tmp_path):
    """Moving S.h5 and S.h5.d together to a new name keeps the store whole."""
    from embedstore.store import open_store

    st = copy_store(labelled / "photos.h5", tmp_path / "renamed.h5")
    with open_store(st) as s:
        X = s.rows(s.select_set().name).load()
    assert X.shape == (42, 32) and np.isfinite(X).all()


def test_reports_for_build_fit_head_and_anomalies(labelled, tmp_path):
    r = embed("build", labelled / "photos", "--store", tmp_path / "b.h5", "--encoder", "test:tiny", "--report", tmp_path / "rb", "-q")
    assert r.exit_code == 0, r.output
    assert "Build:" in (tmp_path / "rb" / "index.html").read_text()
    r = embed("fit-head", "ridge", "--store", labelled / "photos.h5", "--report", tmp_path / "rh", "-q")
    assert r.exit_code == 0, r.output
    page = (tmp_path / "rh" / "index.html").read_text()
    assert "Classifier head: ridge" in page and "Embedding map" in page
    assert (tmp_path / "rh" / "confusion.png").is_file() and (tmp_path / "rh" / "validation_curve.png").is_file()
    r = embed("anomalies", "--store", labelled / "photos.h5", "--fit-on", "label=cat", "--report", tmp_path / "ra", "-q")
    assert r.exit_code == 0, r.output
    page = (tmp_path / "ra" / "index.html").read_text()
    assert "Top 20 anomalies" in page and page.count("data:image/png;base64,") >= 22  # the CLI's --top


def test_predict_with_a_kept_store_labels_only_the_source_items(labelled, tmp_path):
    h = tmp_path / "h"
    assert embed("fit-head", "ridge", "--store", labelled / "photos.h5", "--out", h, "-q").exit_code == 0
    keep = tmp_path / "keep.h5"
    first = make_image_folder(tmp_path / "first", classes=CLASSES, per_class=2, seed=3)
    second = make_image_folder(tmp_path / "second", classes=("new",), per_class=1, seed=4)
    assert embed("predict", h, first, "--store", keep, "--out", tmp_path / "a.json", "-q").exit_code == 0
    r = embed("predict", h, second, "--store", keep, "--out", tmp_path / "b.json", "-q")
    assert r.exit_code == 0, r.output
    assert len(json.loads((tmp_path / "a.json").read_text())) == 6
    assert [x["id"] for x in json.loads((tmp_path / "b.json").read_text())] == ["new/new_000.jpg"]
    # a folder whose ids the kept store holds from other, still existing files: refused, nothing replaced
    third = make_image_folder(tmp_path / "third", classes=("cat",), per_class=1, seed=5)
    r = embed("predict", h, third, "--store", keep, "--out", tmp_path / "c.json", "-q")
    assert r.exit_code == 2 and "already in the store from another file" in r.output and not (tmp_path / "c.json").exists()


def test_small_validation_chooses_by_cross_validation_and_says_so(labelled, tmp_path):
    """14 items per class leave ~2 validation items per class: the C is chosen by stratified 5-fold
    cross-validation on train + val instead, and the report says so; --val-fraction 0 does the same."""
    from embedstore.heads.fit import fit_head

    rep, _ = fit_head(labelled / "photos.h5", "logistic", progress=False)
    assert rep.selection.startswith("by 5-fold stratified cross-validation on train + val")
    assert "fewer than 30" in rep.selection and all(p["folds"] == 5 for p in rep.curve)
    rep0, _ = fit_head(labelled / "photos.h5", "ridge", val_fraction=0, progress=False)
    assert rep0.counts["val"] == 0 and "no validation split" in rep0.selection and rep0.test["accuracy"] >= 0.8
    r = embed("fit-head", "knn", "--store", labelled / "photos.h5", "--val-fraction", 0)
    assert r.exit_code == 0 and "chosen by 5-fold stratified cross-validation" in r.output
    # a linear head's temperature: fitted on every held-out fold (all of train + val), not on the last fold alone
    for kind, kw in (("ridge", dict(val_fraction=0)), ("linear-svm", {})):
        r, head = fit_head(labelled / "photos.h5", kind, progress=False, **kw)
        assert head.calibrated_on_ == (f"the 5 held-out folds of the cross-validation, each scored by a fit on the other "
                                       f"folds (n={r.counts['train'] + r.counts['val']})"), head.calibrated_on_
    # the vectors over --max-memory: validation, and the summary says why not cross-validation
    rep1, _ = fit_head(labelled / "photos.h5", "ridge", max_memory="1KB", progress=False)
    assert rep1.selection.startswith("on the validation split") and "over --max-memory, so not by cross-validation" in rep1.selection


def test_flat_probabilities_at_the_chosen_value_are_said_with_the_value_that_fixes_them():
    """Separable data under cross-validation: every C from 0.01 up is right on every held-out item and
    the one-standard-error rule keeps the simplest, whose probabilities are near uniform; the summary
    names the equally accurate value whose held-out log loss is far lower. No note when they agree."""
    from embedstore.heads.fit import _flat_probability_note
    from embedstore.heads.logistic import LogisticHead

    curve = [{"value": c, "val_accuracy": a, "val_accuracy_se": 0.0, "val_log_loss": ll}
             for c, a, ll in ((0.001, 0.37, 1.38), (0.01, 1.0, 1.28), (1.0, 1.0, 0.21), (100.0, 1.0, 0.004))]
    (note,) = _flat_probability_note(LogisticHead, curve, 0.01)
    assert note.startswith("probabilities: at C = 0.01 they are flatter than the data supports (held-out log loss 1.280)")
    assert "pass --param C=100 for probabilities" in note
    curve[1]["val_log_loss"] = 0.01
    assert _flat_probability_note(LogisticHead, curve, 0.01) == []


def test_a_logistic_head_with_flat_probabilities_at_its_chosen_c_gets_a_held_out_temperature(labelled, tmp_path):
    """Separable colour classes under cross-validation: the chosen C is right on every item but its
    probabilities were near uniform. The head keeps that C (and its labels) and gets a temperature
    fitted on the held-out folds, saved with it, used by every door, and refused when edited to
    nonsense."""
    from embedstore.heads.fit import fit_head
    from embedstore.modelfile import content_sha256, load_head

    out = tmp_path / "h"
    rep, head = fit_head(labelled / "photos.h5", "logistic", out=out, progress=False)
    assert rep.test["accuracy"] == 1.0 and head.temperature_ < 0.5
    assert any("sharpened by the temperature below (labels unchanged)" in n for n in rep.notes)
    assert any(n.startswith("probabilities: temperature") and "held-out folds" in n for n in rep.notes)
    loaded, _ = load_head(out)
    assert loaded.temperature_ == pytest.approx(head.temperature_)
    r = embed("predict", out, labelled / "photos", "--json", "-q")
    probs = [x["prob"] for x in json.loads(r.stdout)["rows"] if x["status"] == "ok"]
    assert min(probs) > 0.9, min(probs)  # right answers said with a fitting probability, not ~0.4
    doc = json.loads((out / "head.json").read_text())
    doc["temperature"] = 0
    doc["content_sha256"] = content_sha256(doc)  # past the content checksum, to the check of the value
    (out / "head.json").write_text(json.dumps(doc))
    r = embed("predict", out, labelled / "photos")
    assert r.exit_code == 2 and "temperature 0 is not a positive finite number" in r.stderr


def test_a_temperature_follows_the_scores_scale_and_stays_finite_on_separable_scores():
    """Scores of a strongly regularised head (about 1e-3) need T far below the old fixed bound of
    0.01, which left every probability at 1/K; held-out scores that are all right must not drive T to
    zero (every probability 1.0): Platt's smoothed targets keep the true class near (n+1)/(n+2)."""
    from embedstore.heads.base import fit_temperature, scores_to_proba

    rng = np.random.default_rng(0)
    y = np.arange(200) % 4
    scores = 1e-3 * (np.eye(4)[y] * 2.0 + 0.3 * rng.standard_normal((200, 4)))  # right on about 99%
    t = fit_temperature(scores, y)
    p = scores_to_proba(scores / t).max(axis=1).mean()
    assert 1e-5 < t < 1e-2 and 0.8 < p < 1.0, (t, p)
    separable = 1e-3 * np.eye(4)[y]  # every item right by a clear margin
    t = fit_temperature(separable, y)
    p = scores_to_proba(separable / t)[np.arange(200), y]
    assert np.all(p < 0.999) and np.all(p > 0.95), (t, p.min(), p.max())


def test_probabilities_far_from_the_test_accuracy_are_said_with_the_fix(labelled):
    """C fixed by --param at a strong regularisation: the head is right on every test item but says
    about 1/K for each answer; the summary says so and how to get calibrated probabilities."""
    from embedstore.heads.fit import fit_head

    rep, _ = fit_head(labelled / "photos.h5", "logistic", params={"C": 1e-4}, progress=False)
    assert rep.test["accuracy"] >= 0.9 and rep.test["mean_confidence"] < 0.5
    (note,) = [n for n in rep.notes if "than it is accurate" in n]
    assert "flatter" in note and "C = 0.0001 was fixed by --param" in note
    rep, _ = fit_head(labelled / "photos.h5", "logistic", progress=False)
    assert not any("than it is accurate" in n for n in rep.notes), rep.notes


def test_a_renamed_class_folder_is_said_not_scored_as_perfect(tmp_path):
    """A class folder renamed after a build leaves its old items in the store (their files are gone)
    beside the same files under the new label: one image taught as two classes, and every test item
    of those two classes dropped as a duplicate of a training item. fit-head says both: the label
    conflict, and that its test figures cover only the classes the test split has."""
    import shutil

    src = make_image_folder(tmp_path / "photos", classes=("cat", "dog", "owl"), per_class=14)
    build_store(src, tmp_path / "s.h5")
    shutil.move(src / "owl", src / "bird")
    build_store(src, tmp_path / "s.h5")
    r = embed("fit-head", "logistic", "--store", tmp_path / "s.h5", "--json", "-q")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["classes"] == ["bird", "cat", "dog", "owl"]
    conflict = [n for n in rep["notes"] if "under another label" in n]
    assert len(conflict) == 1 and "'bird'" in conflict[0] and "'owl'" in conflict[0], rep["notes"]
    assert rep["test"]["classes_without_items"] == ["bird", "owl"]
    r = embed("fit-head", "logistic", "--store", tmp_path / "s.h5", "-q")
    assert "WARNING: 2 of the head's 4 classes have no items here ('bird', 'owl')" in r.output, r.output
    # a store without such items says neither
    r = embed("fit-head", "logistic", "--store", tmp_path / "s.h5", "--exclude", _missing_list(tmp_path), "--json", "-q")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert not [n for n in rep["notes"] if "under another label" in n] and rep["test"]["classes_without_items"] == []
    assert rep["classes"] == ["bird", "cat", "dog"] and rep["excluded"]["classes_removed"] == ["owl"]
    assert any("class(es) 'owl': every item left out" in n for n in rep["notes"])


def _missing_list(tmp_path: Path) -> Path:
    r = embed("ls", tmp_path / "s.h5", "--status", "missing")
    assert r.exit_code == 0, r.output
    out = tmp_path / "gone.txt"
    out.write_text(r.output)
    assert len(r.output.split()) == 14
    return out


def test_build_like_a_store_or_head_embeds_as_its_vectors_were_made(tmp_path):
    """Two stores of one encoder can get different automatic preprocessing (images smaller than the
    input are squashed, larger ones cropped), and a head fitted on one refused the other. --like
    embeds a source exactly as a store's (or a head's) vectors were made."""
    small = make_image_folder(tmp_path / "small", classes=CLASSES, per_class=8, size=(20, 18))
    big = make_image_folder(tmp_path / "big", classes=CLASSES, per_class=4, size=(64, 60), seed=5)
    tiny = ["--encoder", "test:tiny", "--precision", "fp32", "-q"]
    assert embed("build", small, "--store", tmp_path / "a.h5", *tiny).exit_code == 0
    assert embed("fit-head", "logistic", "--store", tmp_path / "a.h5", "--out", tmp_path / "h", "-q").exit_code == 0
    assert embed("build", big, "--store", tmp_path / "plain.h5", *tiny).exit_code == 0
    r = embed("evaluate", tmp_path / "h", "--store", tmp_path / "plain.h5")
    assert r.exit_code == 2 and "resize_mode" in r.output and "embed build --like" in r.output, r.output
    for like, out in ((tmp_path / "a.h5", "b.h5"), (tmp_path / "h", "c.h5")):
        r = embed("build", big, "--store", tmp_path / out, "--like", like, "--precision", "fp32", "--json", "-q")
        assert r.exit_code == 0, r.output
        rep = json.loads(r.output)
        a = json.loads(embed("info", tmp_path / "a.h5", "--json").output)
        assert rep["vector_set"] == a["vector_sets"][0]["name"], (rep["vector_set"], a["vector_sets"])
        r = embed("evaluate", tmp_path / "h", "--store", tmp_path / out, "--json")
        assert r.exit_code == 0, r.output
    # bad input: one line, exit 2, no store written
    cases = [(["--like", tmp_path / "nothing.h5"], "does not exist"),
             (["--like", tmp_path / "small"], "is neither a store made by `embed build` nor a saved head folder"),
             (["--like", tmp_path / "a.h5", "--resize-mode", "squash", "--layer", "x"], "leave out --layer, --resize-mode")]
    for extra, message in cases:
        r = embed("build", big, "--store", tmp_path / "bad.h5", *extra, "-q")
        assert r.exit_code == 2 and message in r.output and len(r.output.strip().splitlines()) == 1, (extra, r.output)
        assert not (tmp_path / "bad.h5").exists()


def test_predict_says_which_files_of_a_folder_it_did_not_read_and_reads_them_with_layout_flat(labelled, tmp_path):
    """A folder of new images with one subfolder was read as class folders: the loose images were
    dropped without a word, "predicted 3 item(s)", exit 0. An empty subfolder made it refuse with
    advice (--layout flat) predict did not take. Now the dropped files are said, --layout flat reads
    them, an empty folder lays nothing out, and anomalies --score says the same."""
    import shutil

    h = tmp_path / "h"
    assert embed("fit-head", "ridge", "--store", labelled / "photos.h5", "--out", h, "-q").exit_code == 0
    new = make_image_folder(tmp_path / "new", classes=CLASSES, per_class=2)
    mix = tmp_path / "mix"
    (mix / "sub").mkdir(parents=True)
    loose = sorted((new / CLASSES[0]).iterdir()) + sorted((new / CLASSES[1]).iterdir())
    for f in loose:
        shutil.copy(f, mix / f.name)
    shutil.copy(next((new / CLASSES[2]).iterdir()), mix / "sub" / "one.png")
    r = embed("predict", h, mix, "--json", "-q")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["predicted"] == 1 and d["skipped"] == {"top-level file outside any class folder": len(loose)}
    (note,) = [n for n in d["notes"] if "used to fit or select" not in n]  # these photos are copies of training items
    assert note.startswith(f"{len(loose)} file(s) or folder(s) of the source were not read") and "--layout flat" in note
    out = embed("predict", h, mix, "-q").output
    assert "not read: 4 top-level file outside any class folder" in out and "pass --layout flat" in out
    r = embed("predict", h, mix, "--layout", "flat", "--json", "-q")
    assert r.exit_code == 0 and json.loads(r.stdout)["predicted"] == len(loose) + 1 and not json.loads(r.stdout)["skipped"]
    # an empty subfolder beside loose images: read flat (auto), nothing to say
    fe = tmp_path / "fe"
    (fe / "empty_sub").mkdir(parents=True)
    for f in loose:
        shutil.copy(f, fe / f.name)
    r = embed("predict", h, fe, "--json", "-q")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["predicted"] == len(loose) and d["skipped"] == {"empty folder (no files under it)": 1}
    assert d["notes"] == [f"{len(loose)} item(s) were used to fit or select this head (by content)"]
    r = embed("predict", h, labelled / "photos.h5", "--layout", "flat")
    assert r.exit_code == 2 and "--layout applies to a folder" in r.output
    for args in (["predict", h, mix, "--layout", "bogus"], ["anomalies", "--store", labelled / "photos.h5", "--score", mix,
                                                            "--layout", "bogus"]):
        r = embed(*args)
        assert r.exit_code == 2 and "--layout must be one of auto, classes, splits, flat, not 'bogus'" in r.output, r.output
        assert r.output.count("\n") == 1
    r = embed("anomalies", "--store", labelled / "photos.h5", "--score", labelled / "photos.h5", "--layout", "flat")
    assert r.exit_code == 2 and "--layout applies to a folder given to --score" in r.output
    r = embed("anomalies", "--store", labelled / "photos.h5", "--score", mix, "--json", "-q")
    assert r.exit_code == 0 and any("not read: 4 top-level file" in n and "(not scored)" in n for n in json.loads(r.stdout)["notes"])
    r = embed("anomalies", "--store", labelled / "photos.h5", "--score", mix, "--layout", "flat", "--json", "-q")
    assert r.exit_code == 0 and json.loads(r.stdout)["scored_count"] == len(loose) + 1


def test_outputs_into_missing_folders_are_made_and_unwritable_ones_are_one_line(labelled, tmp_path):
    """`anomalies --out nd9/r.csv` failed as 'unexpected FileNotFoundError' when nd9 did not exist
    (other outputs made their folder); `fit-head --out /proc/x` the same. predict refused the missing folder."""
    r = embed("anomalies", "--store", labelled / "photos.h5", "--out", tmp_path / "nd9" / "r.csv", "-q")
    assert r.exit_code == 0 and (tmp_path / "nd9" / "r.csv").read_text().startswith("rank,id"), r.output
    h = tmp_path / "h"
    assert embed("fit-head", "ridge", "--store", labelled / "photos.h5", "--out", h, "-q").exit_code == 0
    r = embed("predict", h, labelled / "photos.h5", "--out", tmp_path / "a" / "b" / "p.csv", "-q")
    assert r.exit_code == 0 and (tmp_path / "a" / "b" / "p.csv").exists(), r.output
    if os.path.isdir("/proc/self"):  # a folder no one can make anything in, even root
        r = embed("anomalies", "--store", labelled / "photos.h5", "--out", "/proc/nope/r.csv", "-q")
        assert r.exit_code == 2 and "cannot write /proc/nope/r.csv: No such file or directory; choose another path" in r.output
        assert "unexpected" not in r.output
        r = embed("fit-head", "ridge", "--store", labelled / "photos.h5", "--out", "/proc/nope", "-q")
        assert r.exit_code == 2 and "cannot write /proc/nope" in r.output and "unexpected" not in r.output


def test_predict_takes_one_image_file(labelled, tmp_path):
    """`embed predict HEAD photo.png` was refused ('a file of an unknown kind') though search --image
    and the server's /api/predict take one image; a file that is not an image still is."""
    h = tmp_path / "h"
    assert embed("fit-head", "ridge", "--store", labelled / "photos.h5", "--out", h, "-q").exit_code == 0
    photo = next((labelled / "photos" / CLASSES[1]).iterdir())
    r = embed("predict", h, photo, "--json", "-q")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    ((row),) = d["rows"]
    assert d["predicted"] == 1 and row["id"] == photo.name and row["label"] in CLASSES and row["seen_in_training"] is True
    (tmp_path / "notes.dat").write_text("not an image")
    r = embed("predict", h, tmp_path / "notes.dat")
    assert r.exit_code == 2 and "a file of an unknown kind" in r.output
    # a photo's name but not a photo's bytes (empty, or text): its reason, as in a folder, and no prediction is an error
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    for f, why in (("empty.png", "empty file (0 bytes)"), ("text.jpg", "not an image")):
        r = embed("predict", h, tmp_path / f, "-q")
        errors = [x for x in r.output.splitlines() if x.startswith("error:")]
        assert r.exit_code == 1 and len(errors) == 1 and "nothing was predicted" in errors[0] and why in errors[0], r.output
        r = embed("predict", h, tmp_path / f, "--json")
        d = json.loads(r.stdout)  # the report, with the error in it as every --json failure has
        assert r.exit_code == 1 and d["quarantined"] == 1 and d["exit_code"] == 1 and why in d["error"], r.output
    # the run failed: a file already at --out stays as it was, and the summary says it was not written
    (tmp_path / "keep.csv").write_text("precious\n")
    r = embed("predict", h, tmp_path / "text.jpg", "--out", tmp_path / "keep.csv", "-q")
    assert r.exit_code == 1 and "wrote" not in r.output and "--out" in r.output and "was not written" in r.output, r.output
    assert (tmp_path / "keep.csv").read_text() == "precious\n"
    # notes of seen items reach --json as they reach the text, and the text marks the seen row
    r = embed("predict", h, photo, "-q")
    assert f"{photo.name}: " in r.output and "[seen in training]" in r.output, r.output
    assert any("used to fit or select this head" in n for n in json.loads(embed("predict", h, photo, "--json", "-q").stdout)["notes"])


def test_an_out_that_is_not_a_saved_head_is_never_told_to_pass_force(labelled, tmp_path):
    """`fit-head --out somefile.csv` said "pass --force to replace it", and with --force "... is not a
    saved head; refusing". A path that is not a saved head is now told so either way, and to choose
    another path; the file is left as it was. A saved head still gets the --force advice."""
    store = labelled / "photos.h5"
    f = tmp_path / "somefile.csv"
    f.write_text("id,label\n")
    for extra in ([], ["--force"]):
        r = embed("fit-head", "logistic", "--store", store, "--out", f, *extra, "-q")
        assert r.exit_code == 2, (extra, r.output)
        assert r.output == (f"error: {f} already exists and is not a saved head, so it is never replaced "
                            "(not even with --force); choose another path\n"), r.output
    assert f.read_text() == "id,label\n"
    h = tmp_path / "h"
    assert embed("fit-head", "ridge", "--store", store, "--out", h, "-q").exit_code == 0
    r = embed("fit-head", "ridge", "--store", store, "--out", h, "-q")
    assert r.exit_code == 2 and f"{h} already exists; pass --force to replace it" in r.output, r.output


def test_evaluate_on_a_store_of_other_labels_is_refused_not_scored_zero(tmp_path):
    """Every item of a store labelled with classes the head never learnt is wrong by construction:
    evaluate refuses in one line naming both label sets rather than printing 0.0000."""
    tiny = ["--encoder", "test:tiny", "--precision", "fp32", "-q"]
    assert embed("build", make_image_folder(tmp_path / "a", classes=CLASSES, per_class=6), "--store", tmp_path / "a.h5", *tiny).exit_code == 0
    assert embed("fit-head", "logistic", "--store", tmp_path / "a.h5", "--out", tmp_path / "h", "-q").exit_code == 0
    other = make_image_folder(tmp_path / "b", classes=("boat", "tree"), per_class=3, seed=4)
    assert embed("build", other, "--store", tmp_path / "b.h5", "--like", tmp_path / "a.h5", "-q").exit_code == 0
    r = embed("evaluate", tmp_path / "h", "--store", tmp_path / "b.h5")
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    assert "none of the 6 labelled items" in r.output and "store: boat, tree" in r.output and CLASSES[0] in r.output


def test_predict_on_files_of_other_labels_gives_no_accuracy_as_evaluate_refuses(tmp_path):
    """evaluate refuses a store none of whose labels the head predicts; predict on such a folder
    printed accuracy 0.0000: it gives none, with a note naming both label sets."""
    tiny = ["--encoder", "test:tiny", "--precision", "fp32", "-q"]
    assert embed("build", make_image_folder(tmp_path / "a", classes=CLASSES, per_class=6), "--store", tmp_path / "a.h5", *tiny).exit_code == 0
    assert embed("fit-head", "logistic", "--store", tmp_path / "a.h5", "--out", tmp_path / "h", "-q").exit_code == 0
    other = make_image_folder(tmp_path / "b", classes=("boat", "tree"), per_class=2, seed=4)
    r = embed("predict", tmp_path / "h", other, "--json", "-q")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["accuracy"] is None and d["predicted"] == 4
    assert any(n.startswith("no accuracy: none of the 4 labelled item(s)") and "source: boat, tree" in n for n in d["notes"]), d["notes"]
    assert "accuracy against" not in embed("predict", tmp_path / "h", other, "-q").output
