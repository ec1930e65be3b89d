"""An encoder: a frozen module that turns preprocessed image tensors into one vector each."""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
from typing import Any

from ..errors import EncoderError
from .config import EncoderConfig, build_transform

_TAP: type | None = None


def _layer_tap(model, layer: str):
    """A module that runs `model` and returns the globally pooled output of its submodule `layer`.
    The class is made on first use, so importing this module does not import torch."""
    global _TAP
    if _TAP is None:
        from torch import nn

        class _LayerTap(nn.Module):
            def __init__(self, model: nn.Module, layer: str):
                super().__init__()
                self.model = model
                self.layer = layer
                self._out = None
                dict(model.named_modules())[layer].register_forward_hook(self._hook)

            def _hook(self, _module, _inp, out):
                self._out = out[0] if isinstance(out, (tuple, list)) else out

            def forward(self, x):
                self._out = None
                self.model(x)
                return pool_features(self._out)

        _TAP = _LayerTap
    return _TAP(model, layer)


def pool_features(t):
    """Global average pooling: (B, C, H, W) -> (B, C); tokens (B, T, C) -> (B, C); (B, C) unchanged."""
    if t.ndim == 4:
        return t.mean(dim=(2, 3))
    if t.ndim == 3:
        return t.mean(dim=1)
    if t.ndim == 2:
        return t
    raise EncoderError(f"layer output has shape {tuple(t.shape)}; expected 2-D, 3-D (tokens) or 4-D (feature maps)")


def state_dict_sha256(module) -> str:
    """A content hash of a module's weights (for weights that are not a file)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()




class Encoder:
    """A frozen encoder with its config, input transform and weight hash.

    `encoder(batch)` maps a float tensor (B, 3, H, W), preprocessed by `encoder.transform`,
    to features (B, dim). Create one with `embedstore.create_encoder(id)`.
    """

    def __init__(self, cfg: EncoderConfig, model, weights_sha256: str, weights_file: str | None = None):
        self.cfg = cfg
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.weights_sha256 = weights_sha256
        self.weights_file = weights_file
        self.transform = build_transform(cfg.preprocess)
        self.text_encoder = None  # CLIP encoders: texts -> vectors in the same space as images

    def select_layer(self, layer: str | None) -> "Encoder":
        """Take globally pooled features from a named submodule instead of the penultimate layer."""
        if not layer or layer == self.cfg.layer:
            return self
        names = [n for n, _ in self.model.named_modules() if n]
        if layer not in names:
            close = difflib.get_close_matches(layer, names, n=5, cutoff=0.5)
            hint = f"; close matches: {', '.join(close)}" if close else f"; layers include: {', '.join(names[-8:])}"
            raise EncoderError(f"{self.cfg.id} has no layer '{layer}'{hint} (list them with `embed encoders --layers {self.cfg.id}`)")
        import torch

        tapped = _layer_tap(self.model, layer).eval()
        size = self.cfg.preprocess.input_size
        with torch.inference_mode():
            dim = int(tapped(torch.zeros(1, 3, size, size)).shape[1])
        self.model = tapped
        self.cfg = dataclasses.replace(self.cfg, layer=layer, dim=dim, pooling="avg")
        return self

    def set_preprocess(self, preprocess) -> "Encoder":
        """Use another image preprocessing (a `Preprocess`, or the dict a vector set's provenance
        records); the input size, mean and std must stay the model's own."""
        from .config import Preprocess

        pp = preprocess if isinstance(preprocess, Preprocess) else Preprocess.from_dict(preprocess)
        mine, theirs = self.cfg.preprocess.to_dict(), pp.to_dict()
        if mine == theirs:
            return self
        fixed = [k for k in ("input_size", "mean", "std") if mine.get(k) != theirs.get(k)]
        if fixed:
            raise EncoderError(f"{self.cfg.id} takes {', '.join(f'{k}={mine.get(k)}' for k in fixed)}; a preprocessing "
                               f"with {', '.join(f'{k}={theirs.get(k)}' for k in fixed)} does not fit this model")
        self.cfg = dataclasses.replace(self.cfg, preprocess=pp)
        self.transform = build_transform(pp)
        return self

    def layer_names(self) -> list[str]:
        return [n for n, _ in self.model.named_modules() if n]

    def provenance(self, normalize: str, dtype: str) -> dict[str, Any]:
        """What made the vectors; two vector sets with different provenance are never mixed."""
        return {
            "encoder": self.cfg.id,
            "weights_sha256": self.weights_sha256,
            "preprocess": self.cfg.preprocess.to_dict(),
            "layer": self.cfg.layer,
            "pooling": self.cfg.pooling,
            "normalize": normalize,
            "dtype": dtype,
            "dim": self.cfg.dim,
            "modality": self.cfg.modality,
        }

    def to(self, device, channels_last: bool = False) -> "Encoder":
        import torch

        self.model = self.model.to(device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        return self

    def __call__(self, x):
        return self.model(x)
