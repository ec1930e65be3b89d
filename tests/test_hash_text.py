"""`test:hash-text`, the registry's fast text encoder for large tests: deterministic, and a real
build and text search go through it like any text encoder."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import embed


def test_hash_text_vectors_are_deterministic_and_distinct():
    from embedstore.encoders import create_encoder

    enc = create_encoder("test:hash-text")
    assert enc.cfg.modality == "text" and enc.cfg.dim == 64
    texts = [f"text {i}" for i in range(1000)]
    a, b = enc(texts).numpy(), create_encoder("test:hash-text")(texts[::-1]).numpy()[::-1]
    assert a.shape == (1000, 64) and a.dtype == np.float32 and np.array_equal(a, b)
    assert np.abs(a).max() <= 1.0 and len(np.unique(a, axis=0)) == 1000
    assert enc.provenance("l2", "float16")["weights_sha256"] == create_encoder("test:hash-text").weights_sha256


def test_hash_text_refuses_weights(tmp_path):
    from embedstore.encoders import create_encoder
    from embedstore.errors import EncoderError

    with pytest.raises(EncoderError, match="no weights"):
        create_encoder("test:hash-text", weights=str(tmp_path / "w.pth"))


def test_hash_text_build_and_text_search(tmp_path):
    src = tmp_path / "texts.txt"
    src.write_text("".join(f"line number {i}\n" for i in range(50)))
    res = embed("build", src, "--store", tmp_path / "s.h5", "--encoder", "test:hash-text", "--json")
    assert res.exit_code == 0, res.output
    res = embed("search", tmp_path / "s.h5", "--text", "line number 17", "-k", "3", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["hits"][0]["id"] == "L18"
