"""`test:tiny`: a small seeded CNN in the real registry so tests exercise the real code path."""

from __future__ import annotations

from .base import Encoder, state_dict_sha256
from .config import EncoderConfig, Preprocess
from .registry import register_family
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


@register_family("test", [TINY])
def create_test(name: str, weights: str | None) -> Encoder:
    model = tiny_cnn()
    if weights and weights != STRUCTURE_ONLY:
        load_into(model, load_state_dict_file(weights, TINY.id), TINY.id, weights)
    return Encoder(TINY, model, state_dict_sha256(model), weights)
