"""Typed encoder configs: the preprocessing an encoder needs and the vectors it gives.

Callers never build transforms by hand: `build_transform(cfg.preprocess)` is the only way a
PIL image becomes an input tensor, so features cannot be made with the wrong preprocessing.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Preprocess:
    """Resize the shorter side to `resize_size`, centre-crop `input_size`, scale to [0, 1], normalise."""

    input_size: int
    resize_size: int
    interpolation: str = "bilinear"  # bilinear | bicubic
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    crop: str = "center"
    antialias: bool = True
    exif_transpose: bool = True

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["mean"] = [round(float(x), 6) for x in self.mean]
        d["std"] = [round(float(x), 6) for x in self.std]
        return d


@dataclass(frozen=True)
class EncoderConfig:
    """What an encoder is: where it comes from, how inputs are prepared, what vectors come out."""

    id: str  # source-prefixed, e.g. "torchvision:resnet50"
    source: str  # torchvision | open_clip | effnet_lite | test | local-dir
    arch: str
    preprocess: Preprocess
    dim: int
    layer: str = "penultimate"  # module name, or "penultimate" for the pooled pre-logits features
    pooling: str = "avg"  # how feature maps become one vector
    family: str = "cnn"  # cnn | vit: cnn models run channels_last
    pretrained: str | None = None  # weight tag (torchvision enum name, open_clip tag)
    weights_desc: str = ""  # where the weights come from, for `embed encoders`
    modality: str = "image"
    extra: dict[str, Any] = field(default_factory=dict)

    def with_layer(self, layer: str, dim: int) -> "EncoderConfig":
        return dataclasses.replace(self, layer=layer, dim=dim)

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "dim": self.dim,
            "input_size": self.preprocess.input_size,
            "layer": self.layer,
            "pooling": self.pooling,
            "weights": self.weights_desc,
        }


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal strings."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def build_transform(pp: Preprocess, uint8: bool = False):
    """The input transform for a config: PIL RGB image -> float tensor (3, H, W).

    `uint8=True` stops before scaling: PIL -> uint8 tensor (3, H, W), 4x fewer bytes to move;
    `batch_normalizer(pp)` then finishes whole batches, on the encoder's device."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import v2 as T

    interp = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}[pp.interpolation]
    # Resize and crop the PIL image first, then convert: the order torchvision's weight
    # transforms and open_clip's preprocess use, so vectors match their reference pipelines.
    steps = [T.Resize(pp.resize_size, interpolation=interp, antialias=pp.antialias), T.CenterCrop(pp.input_size),
             T.PILToTensor()]
    return T.Compose(steps if uint8 else steps + list(batch_normalizer(pp).transforms))


def batch_normalizer(pp: Preprocess):
    """uint8 tensors (..., 3, H, W) -> float32 scaled to [0, 1] and normalised (the last steps)."""
    import torch
    from torchvision.transforms import v2 as T

    return T.Compose([T.ToDtype(torch.float32, scale=True), T.Normalize(mean=list(pp.mean), std=list(pp.std))])
