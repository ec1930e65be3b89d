"""`embed finetune` on a text store (st:all-MiniLM-L6-v2, bundled offline): the last layers train,
the result loads as a local-dir text encoder, the store gets a new vector set, and before/after are
compared on the same untouched test items."""

from __future__ import annotations

import csv
import json

import pytest

from conftest import embed

pytest.importorskip("sentence_transformers")

POS = ["great film, loved it", "wonderful and moving", "a joy to watch", "brilliant acting", "fantastic story",
       "really enjoyable", "superb direction", "delightful from start to end", "excellent and funny", "beautifully made",
       "i loved every minute", "a masterpiece"]
NEG = ["awful and boring", "a waste of time", "terrible acting", "i hated it", "dull and slow", "the worst film",
       "poorly written", "painful to sit through"]


@pytest.mark.slow
def test_text_finetune_end_to_end(tmp_path):
    from embedstore.encoders import create_encoder
    from embedstore.store import open_store

    rows = [(f"p{i}", t, "pos") for i, t in enumerate(POS)] + [(f"n{i}", t, "neg") for i, t in enumerate(NEG)]
    with open(tmp_path / "reviews.csv", "w", newline="") as f:
        csv.writer(f).writerows([("id", "text", "label"), *rows])
    r = embed("build", tmp_path / "reviews.csv", "--store", tmp_path / "r.h5", "--encoder", "st:all-MiniLM-L6-v2", "-q", "--json")
    assert r.exit_code == 0, r.output
    r = embed("finetune", "--store", tmp_path / "r.h5", "--out", tmp_path / "ft", "--unfreeze", 1, "--epochs", 2,
              "--batch-size", 8, "--class-weight", "balanced", "--seed", 0, "--json", "-q")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["parent"] == "st:all-MiniLM-L6-v2" and rep["recipe"]["class_weight"] == "balanced"
    assert 0 < rep["trainable_params"] < rep["trainable_params"] + rep["frozen_params"]
    assert rep["before"]["class_weight"] == "balanced" and "test_balanced_accuracy" in rep["after"]["finetuned_classifier"]
    assert rep["new_vector_set"] and rep["after"]["probe_on_new_vectors"]["test_n"] == rep["before"]["test_n"] > 0
    enc = create_encoder(f"local-dir:{tmp_path / 'ft'}")
    assert enc.cfg.modality == "text" and enc(["a fine film"]).shape == (1, 384)
    with open_store(tmp_path / "r.h5") as st:
        names = [vs.name for vs in st.vector_sets()] if hasattr(st, "vector_sets") else None
    if names is not None:
        assert rep["new_vector_set"] in names and rep["vector_set"] in names
    sel = rep["after"]["finetuned_classifier"]["selection"]
    assert sel["on"] == "the val split" and sel["n"] == rep["counts"]["val"] and sel["chose"].startswith("epoch")
    # training reads the texts the store keeps: the source file is needed only to re-embed. The
    # re-embedded set is now the store's default; a second fine-tune starts from MiniLM's own set
    # (it trained on the fine-tuned set and then failed: a local-dir encoder's parent must be a
    # registry encoder), and says so
    (tmp_path / "reviews.csv").unlink()
    r = embed("finetune", "--store", tmp_path / "r.h5", "--out", tmp_path / "ft2",
              "--unfreeze", 1, "--epochs", 1, "--batch-size", 8, "--no-reembed", "--json", "-q")
    assert r.exit_code == 0, r.output
    rep2 = json.loads(r.output)
    assert rep2["vector_set"] == rep["vector_set"] and rep2["parent"] == "st:all-MiniLM-L6-v2"
    assert any(n.startswith(f"fine-tuned vector set {rep['vector_set']} (st:all-MiniLM-L6-v2)") for n in rep2["notes"])
    assert create_encoder(f"local-dir:{tmp_path / 'ft2'}").cfg.modality == "text"
    # naming the fine-tuned set: refused in one line, before loading or writing anything
    r = embed("finetune", "--store", tmp_path / "r.h5", "--set", f"local-dir:{tmp_path / 'ft'}", "--out", tmp_path / "ft3", "-q")
    assert r.exit_code == 2 and r.output.count("\n") == 1, r.output
    assert r.output.rstrip().endswith("instead: --set st:all-MiniLM-L6-v2") and not (tmp_path / "ft3").exists(), r.output


def test_text_finetune_thaws_the_last_transformer_layers():
    from embedstore.encoders import create_encoder
    from embedstore.encoders.blocks import blocks, trainable_names

    enc = create_encoder("st:all-MiniLM-L6-v2")
    keys = blocks(enc.model)
    assert len(keys) == 6 and keys[-1].endswith("encoder.layer.5")
    names = trainable_names(enc.model, 2)
    assert any(".layer.4." in n for n in names) and not any(".layer.3." in n for n in names)
    assert not any("embeddings" in n for n in names)
