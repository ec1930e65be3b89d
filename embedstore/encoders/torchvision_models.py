"""`torchvision:<arch>[/<WEIGHTS>]`: torchvision classifiers with their ImageNet weight enums.

Features are the pooled pre-logits vector (the input of the last Linear layer). Preprocessing
is read from the weight enum's own transforms, so it always matches the weights.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import EncoderError, WeightsUnavailableError
from .base import Encoder
from .config import EncoderConfig, Preprocess
from .registry import register_family, unknown_encoder
from .weights import STRUCTURE_ONLY, host_reachable, load_into, load_state_dict_file, weights_sha256


def _cfg(arch, dim, resize, interp, family, weights, filename) -> EncoderConfig:
    return EncoderConfig(
        id=f"torchvision:{arch}",
        source="torchvision",
        arch=arch,
        preprocess=Preprocess(input_size=224, resize_size=resize, interpolation=interp),
        dim=dim,
        family=family,
        pretrained=weights,
        weights_desc=f"ImageNet {weights}, download",
        extra={"filename": filename},
    )


CONFIGS = [
    _cfg("resnet18", 512, 256, "bilinear", "cnn", "IMAGENET1K_V1", "resnet18-f37072fd.pth"),
    _cfg("resnet50", 2048, 232, "bilinear", "cnn", "IMAGENET1K_V2", "resnet50-11ad3fa6.pth"),
    _cfg("efficientnet_b0", 1280, 256, "bicubic", "cnn", "IMAGENET1K_V1", "efficientnet_b0_rwightman-7f5810bc.pth"),
    _cfg("convnext_tiny", 768, 236, "bilinear", "cnn", "IMAGENET1K_V1", "convnext_tiny-983f1562.pth"),
    _cfg("vit_b_16", 768, 256, "bilinear", "vit", "IMAGENET1K_V1", "vit_b_16-c867db91.pth"),
]


def hub_checkpoint_dir() -> Path:
    """torch.hub's checkpoint folder, computed without importing torch."""
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "torch"
    )
    return Path(torch_home) / "hub" / "checkpoints"


def availability(cfg: EncoderConfig) -> str:
    return "cached" if (hub_checkpoint_dir() / cfg.extra["filename"]).is_file() else "download"


def _weights_enum(arch: str, tag: str | None, encoder_id: str):
    import torchvision.models as tvm

    try:
        enum = tvm.get_model_weights(arch)
    except (ValueError, KeyError):
        raise unknown_encoder(encoder_id, [c.id for c in CONFIGS] + [f"torchvision:{m}" for m in tvm.list_models(tvm)]) from None
    if tag is None:
        return enum.DEFAULT
    try:
        return enum[tag]
    except KeyError:
        raise EncoderError(f"{arch} has no weights '{tag}'; choose one of {', '.join(w.name for w in enum)}") from None


def preprocess_from_weights(wenum, encoder_id: str) -> Preprocess:
    """The weights' own evaluation transforms (resize shorter side, centre crop, interpolation,
    antialias, mean, std), as a Preprocess that builds the same pixels."""
    tf = wenum.transforms()
    needed = ("crop_size", "resize_size", "interpolation", "mean", "std")
    if not all(hasattr(tf, k) for k in needed):
        raise EncoderError(f"{encoder_id}: the transforms of {wenum} are not an image classification preprocessing "
                           f"({type(tf).__name__}); choose ImageNet classification weights")
    return Preprocess(
        input_size=int(tf.crop_size[0]),
        resize_size=int(tf.resize_size[0]),
        interpolation=tf.interpolation.value,
        mean=tuple(tf.mean),
        std=tuple(tf.std),
        antialias=getattr(tf, "antialias", True) is not False,
    )


def _replace_last_linear(model) -> tuple[str, int]:
    """Turn the classifier's last Linear into Identity; return its name and input width."""
    from torch import nn

    name, last = None, None
    for n, m in model.named_modules():
        if isinstance(m, nn.Linear):
            name, last = n, m
    if last is None:
        raise EncoderError("model has no Linear classifier to remove; pass --layer to choose a feature layer")
    parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
    setattr(parent, name.rsplit(".", 1)[-1], nn.Identity())
    return name, last.in_features


@register_family("torchvision", CONFIGS, open_ended=True, available=availability)
def create_torchvision(name: str, weights: str | None) -> Encoder:
    import torchvision.models as tvm

    arch, _, tag = name.partition("/")
    encoder_id = f"torchvision:{arch}"
    wenum = _weights_enum(arch, tag or None, encoder_id)
    pp = preprocess_from_weights(wenum, encoder_id)
    model = tvm.get_model(arch, weights=None)
    if weights == STRUCTURE_ONLY:
        path = None  # local-dir fills the weights and records their hash
    elif weights:
        path = weights
        load_into(model, load_state_dict_file(path, encoder_id), encoder_id, path)
    else:
        path = str(hub_checkpoint_dir() / Path(wenum.url).name)
        if not os.path.isfile(path):
            if not host_reachable(wenum.url):
                raise WeightsUnavailableError(
                    f"{encoder_id} weights are not cached at {path} and {wenum.url} cannot be reached from here; "
                    f"download that file elsewhere and pass --weights FILE (or copy it to {path})"
                )
            from torch.hub import download_url_to_file

            os.makedirs(os.path.dirname(path), exist_ok=True)
            download_url_to_file(wenum.url, path, progress=True)
        load_into(model, load_state_dict_file(path, encoder_id), encoder_id, path)
    head, dim = _replace_last_linear(model)
    family = "vit" if arch.startswith(("vit", "swin", "maxvit")) else "cnn"
    cfg = EncoderConfig(
        id=encoder_id if not tag else f"torchvision:{arch}/{tag}",
        source="torchvision",
        arch=arch,
        preprocess=pp,
        dim=dim,
        layer=f"penultimate:{head}",
        pooling="model",
        family=family,
        pretrained=wenum.name,
        weights_desc=f"ImageNet {wenum.name}",
    )
    return Encoder(cfg, model, weights_sha256(path) if path else "", path)
