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


def fake_hub_checkpoint(cache: "os.PathLike", repo: str, state_dict: dict) -> "os.PathLike":
    """A checkpoint in Hugging Face's cache layout, as `hf_hub_download` leaves it (read offline)."""
    from pathlib import Path

    from safetensors.torch import save_file

    revision = "0" * 40
    repo_dir = Path(cache) / f"models--{repo.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(revision)
    snap = repo_dir / "snapshots" / revision
    snap.mkdir(parents=True)
    path = snap / "open_clip_model.safetensors"
    save_file({k: v.detach().half().contiguous().clone() for k, v in state_dict.items()}, str(path))
    return path


def test_open_clip_hub_weights_hash_is_cached_by_checkpoint_file(tmp_path, monkeypatch):
    """open_clip hub weights are hashed from the loaded state dict (that is the provenance's weights
    hash); the hash is cached by the checkpoint file's path, size and mtime, like a weights file's.
    The hub is faked: a seeded ViT-S-32 checkpoint in a temporary Hugging Face cache under a tag
    registered for the test, loaded through open_clip's real offline hub path."""
    import json

    import huggingface_hub.constants as hf_constants
    import open_clip
    import torch
    from open_clip import pretrained as oc

    from embedstore.encoders import create_encoder
    from embedstore.encoders.base import state_dict_sha256
    from embedstore.encoders.open_clip_models import text_view

    monkeypatch.setenv("EMBEDSTORE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setitem(oc._PRETRAINED, "ViT-S-32", {**oc._PRETRAINED.get("ViT-S-32", {}),
                                                     "embedstore_test": oc._pcfg(hf_hub="embedstore-test/vit-s-32/")})
    torch.manual_seed(0)
    ckpt = fake_hub_checkpoint(tmp_path / "hub", "embedstore-test/vit-s-32", open_clip.create_model("ViT-S-32").state_dict())

    enc = create_encoder("open_clip:ViT-S-32/embedstore_test")
    assert enc.hub_checkpoint.resolve() == ckpt.resolve()  # the file open_clip loaded, found offline
    assert enc.weights_sha256 == state_dict_sha256(enc.model)  # the same hash stores already record
    text = text_view(enc)
    assert text.weights_sha256 == state_dict_sha256(enc.text_encoder.model) != enc.weights_sha256

    cache = tmp_path / "cache" / "weights-sha256.json"
    doc = json.loads(cache.read_text())
    assert len(doc) == 2 and all(k.startswith(str(ckpt.resolve()) + "|") for k in doc)
    # a cached hash is served without hashing the state dict: prove it with a cache that says "x" / "y"
    cache.write_text(json.dumps({k: ("x" if "visual" in k else "y") * 64 for k in doc}))
    again = create_encoder("open_clip:ViT-S-32/embedstore_test")
    assert again.weights_sha256 == "x" * 64 and text_view(again).weights_sha256 == "y" * 64
    os.utime(ckpt, ns=(ckpt.stat().st_atime_ns, ckpt.stat().st_mtime_ns + 10**9))  # touched: hashed again
    renewed = create_encoder("open_clip:ViT-S-32/embedstore_test")
    assert renewed.weights_sha256 == enc.weights_sha256
    assert len(json.loads(cache.read_text())) == 2  # the stale visual entry replaced, the text one kept
