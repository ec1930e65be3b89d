"""`timm:<model>[.<tag>]`: any timm backbone, with timm's own pretrained config and transforms.

The vector is the model's pooled pre-logits output (`num_classes=0`). Preprocessing is read from
`timm.data.resolve_model_data_config(model)` and mapped into our `Preprocess`, which builds the
same pixels as `timm.data.create_transform` (tests/test_timm.py checks it). `--layer` takes one of
the model's feature-info modules (`embed encoders --layers timm:<model>`), run through timm's
`forward_intermediates` and average-pooled; any other module name is tapped with a hook.

Weights come from `--weights FILE` (.safetensors or .pth, read without unpickling code) or from the
local Hugging Face cache; a download happens only when the hub is reachable and HF_HUB_OFFLINE is
not set. Offline with nothing cached, creation fails at once with the fix.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

from ..errors import EncoderError, WeightsUnavailableError
from .base import Encoder, pool_features
from .config import EncoderConfig, Preprocess
from .registry import register_family
from .weights import STRUCTURE_ONLY, host_reachable, load_state_dict_file, weights_sha256

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
INCEPTION = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
HF_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm's hub repos hold, preferred first


def _cfg(name: str, dim: int, size: int, crop_pct: float, norm, family: str) -> EncoderConfig:
    mean, std = norm
    return EncoderConfig(
        id=f"timm:{name}",
        source="timm",
        arch=name.split(".", 1)[0],
        preprocess=Preprocess(input_size=size, resize_size=math.floor(size / crop_pct), interpolation="bicubic",
                              mean=mean, std=std),
        dim=dim,
        layer="penultimate",
        pooling="model",
        family=family,
        pretrained=name.partition(".")[2] or None,
        weights_desc=f"timm/{name}, HF hub",
    )


# A curated set for `embed encoders`; values are timm's pretrained configs (tests/test_timm.py checks them).
CONFIGS = [
    _cfg("resnet50.a1_in1k", 2048, 224, 0.95, IMAGENET, "cnn"),
    _cfg("convnext_tiny.fb_in22k_ft_in1k", 768, 224, 0.875, IMAGENET, "cnn"),
    _cfg("convnextv2_tiny.fcmae_ft_in22k_in1k", 768, 224, 0.875, IMAGENET, "cnn"),
    _cfg("efficientnet_b0.ra_in1k", 1280, 224, 0.875, IMAGENET, "cnn"),
    _cfg("mobilenetv3_large_100.ra_in1k", 1280, 224, 0.875, IMAGENET, "cnn"),
    _cfg("vit_small_patch16_224.augreg_in21k_ft_in1k", 384, 224, 0.9, INCEPTION, "vit"),
    _cfg("vit_base_patch16_224.augreg2_in21k_ft_in1k", 768, 224, 0.9, INCEPTION, "vit"),
    _cfg("vit_small_patch14_dinov2.lvd142m", 384, 518, 1.0, IMAGENET, "vit"),
    _cfg("vit_base_patch14_dinov2.lvd142m", 768, 518, 1.0, IMAGENET, "vit"),
    _cfg("eva02_base_patch14_224.mim_in22k", 768, 224, 0.9, CLIP, "vit"),
]


def preprocess_from_timm(data_cfg: dict, encoder_id: str = "timm model") -> Preprocess:
    """timm's resolved data config (input_size, interpolation, mean, std, crop_pct, crop_mode) as the
    Preprocess that builds the pixels `timm.data.create_transform(**data_cfg)` builds at evaluation."""
    _, h, w = data_cfg["input_size"]
    if h != w:
        raise EncoderError(f"{encoder_id} takes {h}x{w} inputs; embedstore supports square inputs only")
    crop_pct = float(data_cfg.get("crop_pct") or 0.875)  # timm's DEFAULT_CROP_PCT
    mode = data_cfg.get("crop_mode") or "center"
    if mode not in ("center", "squash"):
        raise EncoderError(f"{encoder_id} asks for timm crop_mode '{mode}'; embedstore maps 'center' and 'squash' only")
    interp = data_cfg.get("interpolation") or "bilinear"
    return Preprocess(
        input_size=int(h),
        resize_size=math.floor(int(h) / crop_pct),  # timm's transforms_factory: floor(img_size / crop_pct)
        interpolation="bicubic" if interp in ("bicubic", "random") else interp,
        mean=tuple(float(x) for x in data_cfg["mean"]),
        std=tuple(float(x) for x in data_cfg["std"]),
        resize_mode="shortest" if mode == "center" else "squash",
    )


def _hf_cached(hub_id: str, filename: str | None = None) -> str | None:
    """The local Hugging Face cache's copy of a timm hub repo's weights, or None."""
    from huggingface_hub import try_to_load_from_cache

    repo, _, revision = hub_id.partition("@")
    for fname in (filename,) if filename else HF_FILES:
        path = try_to_load_from_cache(repo, fname, revision=revision or None)
        if isinstance(path, str) and os.path.isfile(path):
            return path
    return None


def _hub_file(pcfg: dict, encoder_id: str) -> str:
    """A local file with the pretrained weights a timm pretrained config names: the HF cache (or the
    torch hub cache for url-only weights), downloading only when the host is reachable."""
    hub_id, url = pcfg.get("hf_hub_id"), pcfg.get("url")
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    if hub_id:
        path = _hf_cached(hub_id, pcfg.get("hf_hub_filename"))
        if path:
            return path
        if not offline and host_reachable("https://huggingface.co"):
            from huggingface_hub import hf_hub_download
            from huggingface_hub.utils import EntryNotFoundError

            repo, _, revision = hub_id.partition("@")
            for fname in (pcfg["hf_hub_filename"],) if pcfg.get("hf_hub_filename") else HF_FILES:
                try:
                    return hf_hub_download(repo, fname, revision=revision or None)
                except EntryNotFoundError:
                    continue
        raise WeightsUnavailableError(
            f"{encoder_id} weights are not in the local Hugging Face cache and huggingface.co/{hub_id} cannot be reached "
            f"from here{' (HF_HUB_OFFLINE=1)' if offline else ''}; download them elsewhere (`hf download {hub_id}`) and copy "
            f"the cache, or pass --weights FILE (a .safetensors or .pth of {pcfg.get('architecture', 'the model')})")
    if url:
        from .torchvision_models import hub_checkpoint_dir

        path = hub_checkpoint_dir() / Path(url).name
        if path.is_file():
            return str(path)
        if offline or not host_reachable(url):
            raise WeightsUnavailableError(f"{encoder_id} weights are not cached at {path} and {url} cannot be reached from "
                                          f"here; download that file elsewhere and pass --weights FILE (or copy it to {path})")
        from torch.hub import download_url_to_file

        path.parent.mkdir(parents=True, exist_ok=True)
        download_url_to_file(url, str(path), progress=True)
        return str(path)
    raise EncoderError(f"timm publishes no pretrained weights for {encoder_id}; pass --weights FILE")


def _create_model(name: str, encoder_id: str, state_dict: dict | None):
    """timm.create_model with the classifier removed, loading `state_dict` through timm's own
    pretrained path (its checkpoint filter), strictly: the model is created with the file's own
    number of classes (timm loads non-strictly when they differ), then its classifier is dropped."""
    import timm

    kw: dict = dict(num_classes=0)
    if state_dict is not None:
        classifier = timm.models.get_pretrained_cfg(name).classifier if timm.models.get_pretrained_cfg(name) else None
        classifier = classifier[0] if isinstance(classifier, (tuple, list)) else classifier
        head = state_dict.get(f"{classifier}.weight") if classifier else None
        n = int(head.shape[0]) if head is not None and head.ndim >= 1 else 0
        kw = dict(num_classes=n, pretrained=True, pretrained_cfg_overlay={"state_dict": state_dict, "num_classes": n})
    try:
        model = timm.create_model(name, **kw)
    except RuntimeError as e:
        msg = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
        detail = next((ln for ln in msg if ln.startswith(("Missing", "Unexpected", "size mismatch"))), msg[-1] if msg else "")
        raise EncoderError(f"{detail[:200] or type(e).__name__}...; pass weights saved from the same timm architecture") from e
    model.pretrained_cfg.pop("state_dict", None)  # let the loaded tensors go
    if kw["num_classes"]:
        model.reset_classifier(0)
    return model.eval()


def availability(cfg: EncoderConfig) -> str:
    try:
        return "cached" if _hf_cached(f"timm/{cfg.id.split(':', 1)[1]}") else "download"
    except Exception:  # noqa: BLE001 - a broken cache is "download" for listing purposes
        return "download"


def intermediate(model, index: int):
    """A module: one feature-info layer of a timm model through `forward_intermediates`,
    average-pooled (feature maps over space, ViT patch tokens over tokens). Made on first use, so
    importing this module (for `embed encoders`) does not import torch."""
    from torch import nn

    class Intermediate(nn.Module):
        def __init__(self):
            super().__init__()
            self.model, self.index = model, index

        def forward(self, x):
            feats = self.model.forward_intermediates(x, indices=[self.index], intermediates_only=True, stop_early=True)
            return pool_features(feats[0])

    return Intermediate()


class TimmEncoder(Encoder):
    """An Encoder whose `--layer` names are timm feature-info modules (stages or blocks)."""

    feature_layers: list[str] = []

    def select_layer(self, layer: str | None) -> "Encoder":
        if not layer or layer == self.cfg.layer:
            return self
        model = self.model
        if layer in self.feature_layers and hasattr(model, "forward_intermediates"):
            import torch

            wrapped = intermediate(model, self.feature_layers.index(layer)).eval()
            size = self.cfg.preprocess.input_size
            with torch.inference_mode():
                dim = int(wrapped(torch.zeros(1, 3, size, size)).shape[1])
            self.model = wrapped
            self.cfg = dataclasses.replace(self.cfg, layer=layer, dim=dim, pooling="avg")
            return self
        return super().select_layer(layer)  # any other module: a forward hook

    def layer_names(self) -> list[str]:
        return list(self.feature_layers) or super().layer_names()


@register_family("timm", CONFIGS, open_ended=True, available=availability)
def create_timm(name: str, weights: str | None) -> Encoder:
    import timm

    encoder_id = f"timm:{name}"
    arch = name.split(".", 1)[0]
    if not timm.is_model(arch):
        import difflib

        close = difflib.get_close_matches(arch, timm.list_models(), n=3, cutoff=0.6)
        raise EncoderError(f"timm has no model '{arch}'" + (f"; did you mean {', '.join(close)}?" if close else "")
                           + " (list them with `python -c \"import timm; print(timm.list_models('*vit*'))\"`)")
    if weights == STRUCTURE_ONLY:
        path = None  # local-dir fills the weights and records their hash
        model = _create_model(name, encoder_id, None)
    else:
        if weights:
            path = weights
        else:
            try:
                pcfg = timm.models.get_pretrained_cfg(name, allow_unregistered=False)
            except RuntimeError:
                tags = timm.list_pretrained(f"{arch}.*")[:8]
                raise EncoderError(f"timm has no pretrained tag '{name.partition('.')[2]}' for {arch}; choose one of: "
                                   f"{', '.join(tags) or '(none: pass --weights FILE)'}") from None
            if pcfg is None:
                raise EncoderError(f"timm publishes no pretrained weights for {encoder_id}; pass --weights FILE")
            path = _hub_file(pcfg.to_dict(), encoder_id)
        state_dict = load_state_dict_file(path, encoder_id)
        try:
            model = _create_model(name, encoder_id, state_dict)
        except EncoderError as e:
            raise EncoderError(f"cannot load {'--weights ' if weights else ''}{path} into {encoder_id}: {e}") from None
    pp = preprocess_from_timm(timm.data.resolve_model_data_config(model), encoder_id)
    tag = model.pretrained_cfg.get("tag") or None
    cfg = EncoderConfig(
        id=encoder_id,
        source="timm",
        arch=arch,
        preprocess=pp,
        dim=int(getattr(model, "head_hidden_size", None) or model.num_features),
        layer="penultimate",
        pooling="model",
        family="vit" if hasattr(model, "patch_embed") else "cnn",
        pretrained=tag,
        weights_desc=f"local file {Path(weights).name}" if weights and path else f"timm/{arch}.{tag}" if tag else "timm",
    )
    enc = TimmEncoder(cfg, model, weights_sha256(path) if path else "", path)
    enc.feature_layers = [str(f["module"]) for f in getattr(model, "feature_info", []) or []]
    return enc
