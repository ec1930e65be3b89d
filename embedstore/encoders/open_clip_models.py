"""`open_clip:<arch>/<pretrained tag>`: the image tower of an open_clip CLIP model.

Vectors are the projected image embeddings (the space the text tower shares). Preprocessing
comes from the model's own preprocess config.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import EncoderError, WeightsUnavailableError
from .base import Encoder, state_dict_sha256
from .config import RESIZE_MODES, EncoderConfig, Preprocess
from .registry import register_family
from .weights import STRUCTURE_ONLY, cached_hash, weights_sha256

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _cfg(arch: str, tag: str, dim: int, size: int = 224) -> EncoderConfig:
    return EncoderConfig(
        id=f"open_clip:{arch}/{tag}",
        source="open_clip",
        arch=arch,
        preprocess=Preprocess(input_size=size, resize_size=size, interpolation="bicubic", mean=CLIP_MEAN, std=CLIP_STD),
        dim=dim,
        layer="image_embed",
        pooling="model",
        family="cnn" if arch.startswith("RN") else "vit",
        pretrained=tag,
        weights_desc=f"{tag}, download",
    )


CONFIGS = [
    _cfg("ViT-B-32", "openai", 512),
    _cfg("ViT-B-32", "laion2b_s34b_b79k", 512),
    _cfg("ViT-B-16", "openai", 512),
    _cfg("ViT-L-14", "openai", 768),
    _cfg("RN50", "openai", 1024),
]


def preprocess_from_open_clip(pp_cfg: dict, encoder_id: str = "open_clip model") -> Preprocess:
    """The model's own preprocessing (open_clip's PreprocessCfg: size, mean, std, interpolation,
    resize_mode, fill_color), read the way open_clip's `image_transform` reads it: SigLIP, CLIPA and
    DFN configs squash where OpenAI CLIP resizes the shorter side and crops."""
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    cfg = PreprocessCfg(**merge_preprocess_dict(PreprocessCfg(), pp_cfg))
    size = cfg.size if isinstance(cfg.size, (tuple, list)) else (cfg.size, cfg.size)
    if int(size[0]) != int(size[1]):
        raise EncoderError(f"{encoder_id} takes {size[0]}x{size[1]} inputs; embedstore supports square inputs only")
    if cfg.resize_mode not in RESIZE_MODES:
        raise EncoderError(f"{encoder_id} asks for resize_mode '{cfg.resize_mode}'; embedstore knows {', '.join(RESIZE_MODES)}")
    fill = cfg.fill_color
    return Preprocess(
        input_size=int(size[0]),
        resize_size=int(size[0]),
        # open_clip's image_transform: anything but bilinear (e.g. 'random') is bicubic at inference
        interpolation="bilinear" if cfg.interpolation == "bilinear" else "bicubic",
        mean=tuple(float(x) for x in cfg.mean),
        std=tuple(float(x) for x in cfg.std),
        resize_mode=cfg.resize_mode,
        fill=int(fill[0] if isinstance(fill, (tuple, list)) else fill),
    )


def _hub_url(arch: str, tag: str) -> str | None:
    import open_clip

    pcfg = open_clip.get_pretrained_cfg(arch, tag)
    if not pcfg:
        return None
    if pcfg.get("hf_hub"):
        return "https://huggingface.co/" + pcfg["hf_hub"]
    return pcfg.get("url") or None


def availability(cfg: EncoderConfig) -> str:
    return "download"


@register_family("open_clip", CONFIGS, open_ended=True, available=availability)
def create_open_clip(name: str, weights: str | None) -> Encoder:
    import open_clip

    arch, _, tag = name.partition("/")
    encoder_id = f"open_clip:{name}"
    if arch not in open_clip.list_models():
        import difflib

        close = difflib.get_close_matches(arch, open_clip.list_models(), n=3)
        raise EncoderError(f"open_clip has no model '{arch}'" + (f"; did you mean {', '.join(close)}?" if close else "") + " (see `embed encoders`)")
    if weights == STRUCTURE_ONLY:
        pretrained, tag = None, tag or "local"
    elif weights:
        pretrained, tag = weights, tag or "local"
    else:
        if not tag:
            tags = [t for a, t in open_clip.list_pretrained() if a == arch]
            raise EncoderError(f"{encoder_id} names no pretrained tag; use open_clip:{arch}/<tag> with a tag from: {', '.join(tags)}")
        url = _hub_url(arch, tag)
        if url is None:
            if tag == "local":  # the tag vectors made from a --weights file carry
                raise EncoderError(f"{encoder_id} was made from a local weights file, not a pretrained tag: pass the same --weights FILE")
            tags = [t for a, t in open_clip.list_pretrained() if a == arch]
            raise EncoderError(f"open_clip has no pretrained tag '{tag}' for {arch}; "
                               + (f"choose one of: {', '.join(tags)}" if tags else f"it has no pretrained weights for {arch}: pass --weights FILE"))
        if "huggingface.co" in url and not os.environ.get("HF_HUB_OFFLINE") and not _reachable(url):
            os.environ["HF_HUB_OFFLINE"] = "1"  # use the local cache only, instead of retrying for a minute
        pretrained = tag
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=pretrained)
    except Exception as e:  # noqa: BLE001 - hub and cache failures come in many types
        if weights:
            raise EncoderError(f"cannot load --weights {weights} into {arch}: {str(e).splitlines()[0][:200]}") from e
        raise WeightsUnavailableError(
            f"{encoder_id} weights are not in the local cache and cannot be downloaded from here "
            f"({type(e).__name__}); download them elsewhere and pass --weights FILE (a .safetensors or .bin of {arch})"
        ) from e
    visual = model.visual
    pp = preprocess_from_open_clip(open_clip.get_model_preprocess_cfg(model), encoder_id)
    dim = int(model.text_projection.shape[1]) if getattr(model, "text_projection", None) is not None else int(visual.output_dim)
    cfg = EncoderConfig(
        id=f"open_clip:{arch}/{tag}",
        source="open_clip",
        arch=arch,
        preprocess=pp,
        dim=dim,
        layer="image_embed",
        pooling="model",
        family="cnn" if arch.startswith("RN") else "vit",
        pretrained=tag,
        weights_desc=tag,
    )
    checkpoint = _hub_checkpoint(arch, tag) if pretrained == tag else None
    if weights and weights != STRUCTURE_ONLY:
        sha = weights_sha256(weights)
    else:
        sha = _state_dict_hash(visual, checkpoint, f"{cfg.id} visual")
    enc = Encoder(cfg, visual, sha, weights)
    enc.text_encoder = _TextTower(model, arch)
    enc.hub_checkpoint = checkpoint
    return enc


def _hub_checkpoint(arch: str, tag: str) -> Path | None:
    """The local file open_clip loaded `arch/tag`'s weights from (the Hugging Face cache, or
    ~/.cache/clip for URL downloads), found without the network; None when it cannot be told."""
    from open_clip import pretrained as oc

    cfg = oc.get_pretrained_cfg(arch, tag) or {}
    if cfg.get("file"):
        return Path(cfg["file"]) if Path(cfg["file"]).is_file() else None
    hub, url = cfg.get("hf_hub"), cfg.get("url")
    if hub and oc.has_hf_hub():  # open_clip prefers the hub, and a .safetensors alternative on it
        from huggingface_hub import try_to_load_from_cache

        model_id, filename = os.path.split(hub)
        filename = filename or oc.HF_WEIGHTS_NAME
        alternatives = getattr(oc, "_get_safe_alternatives", lambda name: [])
        for name in [*alternatives(filename), filename]:
            found = try_to_load_from_cache(model_id, name)
            if isinstance(found, str) and os.path.isfile(found):
                return Path(found)
        return None
    if url:
        found = Path("~/.cache/clip").expanduser() / os.path.basename(url)
        return found if found.is_file() else None
    return None


def _state_dict_hash(module, checkpoint: Path | None, what: str) -> str:
    """`state_dict_sha256(module)` (the provenance's weights hash of hub weights), hashed once per
    checkpoint file (path, size, mtime) and open_clip version rather than on every build and query."""
    if checkpoint is None:
        return state_dict_sha256(module)
    import open_clip

    return cached_hash(checkpoint, f"open_clip {open_clip.__version__} {what} state dict", lambda: state_dict_sha256(module))


class _TextTower:
    """The same CLIP model's text tower: texts -> embeddings in the image embeddings' space."""

    def __init__(self, model, arch: str):
        self.model, self.arch = model, arch

    def __call__(self, texts: list[str]):
        import open_clip
        import torch

        try:
            tokenizer = open_clip.get_tokenizer(self.arch)
        except Exception as e:  # noqa: BLE001 - hub tokenizers fail offline in many ways
            raise EncoderError(f"the text tokenizer of {self.arch} is not available here ({type(e).__name__})") from e
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            return self.model.encode_text(tokenizer(texts).to(device)).float()

    def token_count(self, text: str) -> int:
        """Tokens of `text` with start and end tokens, before truncation to the context length."""
        import open_clip

        encode = getattr(open_clip.get_tokenizer(self.arch), "encode", None)
        return len(encode(text)) + 2 if encode else 0


def _reachable(url: str) -> bool:
    from .weights import host_reachable

    return host_reachable(url)


def text_view(enc: Encoder):
    """The same CLIP model as a text encoder (its text tower), for text sources: vectors land in the
    space of its image vectors. Its provenance says modality text, the tokenizer and the context length."""
    import dataclasses

    from .sentence import TextEncoder, TextPreprocess

    tower = enc.text_encoder
    ctx = int(getattr(tower.model, "context_length", 77))
    cfg = dataclasses.replace(enc.cfg, modality="text", layer="text_embed", pooling="model", family="text",
                              preprocess=TextPreprocess("open_clip tokenizer", ctx, True))
    if enc.weights_file:
        sha = weights_sha256(enc.weights_file)
    else:
        sha = _state_dict_hash(tower.model, getattr(enc, "hub_checkpoint", None), f"{enc.cfg.id} full model")
    return TextEncoder(cfg, tower.model, sha, enc.weights_file, embed=tower, count_tokens=tower.token_count)
