"""Weights files are hashed once per (path, size, mtime): a changed file is hashed again, and a
cache that cannot be written costs nothing but the hashing."""

from __future__ import annotations

import hashlib
import os


def test_weights_hash_is_cached_and_renewed_when_the_file_changes(tmp_path, monkeypatch):
    from embedstore.encoders.weights import weights_sha256

    monkeypatch.setenv("EMBEDSTORE_CACHE_DIR", str(tmp_path / "cache"))
    w = tmp_path / "w.bin"
    w.write_bytes(b"a" * 1000)
    first = weights_sha256(w)
    assert first == hashlib.sha256(b"a" * 1000).hexdigest()
    assert (tmp_path / "cache" / "weights-sha256.json").is_file()
    # a cached answer is served without reading the file: prove it with a file the cache says is "x"
    import json

    cache = tmp_path / "cache" / "weights-sha256.json"
    doc = json.loads(cache.read_text())
    cache.write_text(json.dumps({k: "x" * 64 for k in doc}))
    assert weights_sha256(w) == "x" * 64
    w.write_bytes(b"b" * 1001)  # changed: another size and mtime -> hashed again
    assert weights_sha256(w) == hashlib.sha256(b"b" * 1001).hexdigest()
    assert len(json.loads(cache.read_text())) == 1  # the stale entry for that path is gone


def test_an_unwritable_cache_still_gives_the_hash(tmp_path, monkeypatch):
    from embedstore.encoders.weights import weights_sha256

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("EMBEDSTORE_CACHE_DIR", str(blocker / "cache"))
    w = tmp_path / "w.bin"
    w.write_bytes(os.urandom(100))
    assert weights_sha256(w) == hashlib.sha256(w.read_bytes()).hexdigest()
