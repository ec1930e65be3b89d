"""Test encoders in the real registry, so tests exercise the real code path: `test:tiny`, a small
seeded CNN for images, and `test:hash-text`, a text encoder fast enough for builds of millions of
rows (each text's vector comes from a seeded hash of its UTF-8 bytes)."""

from __future__ import annotations

import hashlib

import numpy as np

from .base import Encoder, state_dict_sha256
from .config import EncoderConfig, Preprocess
from .registry import register_family
from .sentence import TextEncoder, TextPreprocess
from .weights import STRUCTURE_ONLY, load_into, load_state_dict_file

TINY = EncoderConfig(
    id="test:tiny",
    source="test",
    arch="tiny_cnn",
    preprocess=Preprocess(input_size=32, resize_size=36, interpolation="bilinear", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
    dim=32,
    layer="penultimate",
    pooling="avg",
    family="cnn",
    pretrained="seed0",
    weights_desc="random, seeded (for tests)",
)

HASH_TEXT = EncoderConfig(
    id="test:hash-text",
    source="test",
    arch="hash_text",
    preprocess=TextPreprocess("none (blake2b of the UTF-8 bytes)", 0),  # 0: no limit, the whole text is hashed
    dim=64,
    layer="hash",
    pooling="none",
    family="text",
    modality="text",
    pretrained="seed0",
    weights_desc="none: seeded hash (for tests)",
)
_HASH_KEY = b"embedstore-test-hash-text-seed0"
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def hash_text_vectors(texts: list[str], dim: int = HASH_TEXT.dim) -> np.ndarray:
    """(n, dim) float32 in [-1, 1): equal texts give equal vectors, different texts unrelated ones.
    A keyed blake2b of each text seeds splitmix64 over the coordinates (vectorised in numpy)."""
    keys = np.fromiter((int.from_bytes(hashlib.blake2b(t.encode("utf-8", "surrogatepass"), digest_size=8, key=_HASH_KEY).digest(),
                                       "little") for t in texts), dtype=np.uint64, count=len(texts))
    with np.errstate(over="ignore"):
        z = keys[:, None] + np.arange(1, dim + 1, dtype=np.uint64) * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return ((z >> np.uint64(40)).astype(np.float32) * np.float32(2.0 ** -23) - np.float32(1.0))


def _hash_text_encoder() -> TextEncoder:
    import torch
    from torch import nn

    def embed(texts: list[str]):
        return torch.from_numpy(hash_text_vectors(texts))

    sha = hashlib.sha256(b"test:hash-text/" + _HASH_KEY).hexdigest()  # the "weights" are the hash key
    return TextEncoder(HASH_TEXT, nn.Identity(), sha, None, embed=embed, count_tokens=lambda t: 0)


def tiny_cnn():
    import torch
    from torch import nn

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )


@register_family("test", [TINY, HASH_TEXT])
def create_test(name: str, weights: str | None) -> Encoder:
    if name == "hash-text":
        if weights:
            from ..errors import EncoderError

            raise EncoderError(f"test:hash-text has no weights (its vectors come from a seeded hash); leave out --weights {weights}")
        return _hash_text_encoder()
    model = tiny_cnn()
    if weights and weights != STRUCTURE_ONLY:
        load_into(model, load_state_dict_file(weights, TINY.id), TINY.id, weights)
    return Encoder(TINY, model, state_dict_sha256(model), weights)
