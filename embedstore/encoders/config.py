"""Typed encoder configs: the preprocessing an encoder needs and the vectors it gives.

Callers never build transforms by hand: `build_transform(cfg.preprocess)` is the only way a
PIL image becomes an input tensor, so features cannot be made with the wrong preprocessing.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import EncoderError, OptionError

RESIZE_MODES = ("shortest", "squash", "longest")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


@dataclass(frozen=True)
class Preprocess:
    """How a PIL image becomes an input tensor; `resize_mode` names open_clip's modes:

    - shortest: resize the shorter side to `resize_size`, centre-crop `input_size` (the ImageNet
      evaluation preprocessing; a border is lost when resize_size > input_size);
    - squash: resize to resize_size x resize_size, ignoring the aspect ratio, then centre-crop
      `input_size` (no crop when they are equal: the whole image is kept);
    - longest: resize the longer side to `resize_size` keeping the aspect ratio, then centre-crop
      or pad (with `fill`) to input_size x input_size.
    Then scale to [0, 1] and normalise with `mean` and `std`.
    """

    input_size: int
    resize_size: int
    interpolation: str = "bilinear"  # bilinear | bicubic | nearest
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    crop: str = "center"
    antialias: bool = True
    exif_transpose: bool = True
    resize_mode: str = "shortest"  # shortest | squash | longest
    fill: int = 0  # padding value (0-255) for resize_mode "longest"

    @property
    def crop_pct(self) -> float:
        """The fraction of the resized image the centre crop keeps (1.0: nothing cropped)."""
        return self.input_size / self.resize_size

    def to_dict(self) -> dict[str, Any]:
        """The provenance form. `resize_mode` and `fill` appear only when not their defaults, so
        vector sets made before they existed keep their provenance, and so their names."""
        d = dataclasses.asdict(self)
        d["mean"] = [round(float(x), 6) for x in self.mean]
        d["std"] = [round(float(x), 6) for x in self.std]
        if self.resize_mode == "shortest":
            del d["resize_mode"]
        if self.fill == 0:
            del d["fill"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocess":
        """The preprocessing a stored provenance records (the inverse of `to_dict`)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise EncoderError(f"recorded preprocessing has keys this version does not know: {', '.join(unknown)} "
                               f"(known: {', '.join(sorted(names))}); upgrade embedstore to read it")
        missing = sorted({"input_size", "resize_size"} - set(d))
        if missing:
            raise EncoderError(f"recorded preprocessing lacks {', '.join(missing)}: {canonical_json(d)}")
        kw = dict(d)
        for k in ("mean", "std"):
            if k in kw:
                kw[k] = tuple(float(x) for x in kw[k])
        pp = cls(**kw)
        _check_choice("resize_mode", pp.resize_mode, RESIZE_MODES, EncoderError)
        _check_choice("interpolation", pp.interpolation, INTERPOLATIONS, EncoderError)
        return pp

    def override(self, crop_pct: float | None = None, interpolation: str | None = None,
                 resize_mode: str | None = None) -> "Preprocess":
        """This preprocessing with some choices replaced; None keeps the model's own. Bad values raise
        OptionError naming the `embed build` flag (--crop-pct, --interpolation, --resize-mode) the
        user typed; a recorded preprocessing that does not parse names its field (resize_mode) instead.

        `crop_pct` in (0, 1] sets resize_size = round(input_size / crop_pct) (1: no border lost)."""
        changes: dict[str, Any] = {}
        if crop_pct is not None:
            try:
                ok = 0.0 < float(crop_pct) <= 1.0
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise OptionError(f"--crop-pct must be a number in (0, 1] (1 keeps the whole image), got {crop_pct!r}")
            changes["resize_size"] = round(self.input_size / float(crop_pct))
        if interpolation is not None:
            changes["interpolation"] = _check_choice("--interpolation", interpolation, INTERPOLATIONS, OptionError)
        if resize_mode is not None:
            changes["resize_mode"] = _check_choice("--resize-mode", resize_mode, RESIZE_MODES, OptionError)
        return dataclasses.replace(self, **changes)

    def describe(self) -> str:
        """One phrase for summaries: 'resize 256 + centre crop 224 (shortest, bicubic)'."""
        if self.resize_mode == "shortest":
            what = f"resize shorter side to {self.resize_size}"
        elif self.resize_mode == "squash":
            what = f"resize straight to {self.resize_size}"
        else:
            what = f"resize longer side to {self.resize_size}"
        if self.resize_size != self.input_size:
            what += f" + centre crop {self.input_size}"
        elif self.resize_mode == "longest":
            what += " + pad to square"
        return f"{what} ({self.resize_mode}, {self.interpolation})"


def _check_choice(name: str, value: Any, allowed: tuple[str, ...], error: type[Exception]) -> str:
    if value not in allowed:
        raise error(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


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
    from torchvision.transforms import v2 as T

    # Resize and crop the PIL image first, then convert: the order torchvision's weight
    # transforms and open_clip's preprocess use, so vectors match their reference pipelines.
    steps = resize_steps(pp) + [T.PILToTensor()]
    return T.Compose(steps if uint8 else steps + list(batch_normalizer(pp).transforms))


def resize_steps(pp: Preprocess) -> list:
    """The resize and crop (or pad) of a preprocessing, as transforms that take a PIL image or a
    uint8 tensor (3, H, W) alike (`embedding.pixels` runs them on tensors decoded by torchvision)."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import v2 as T

    interp = InterpolationMode(_check_choice("interpolation", pp.interpolation, INTERPOLATIONS, EncoderError))
    mode = _check_choice("resize_mode", pp.resize_mode, RESIZE_MODES, EncoderError)
    if mode == "shortest":
        return [T.Resize(pp.resize_size, interpolation=interp, antialias=pp.antialias), T.CenterCrop(pp.input_size)]
    if mode == "squash":
        steps = [T.Resize((pp.resize_size, pp.resize_size), interpolation=interp, antialias=pp.antialias)]
        return steps + [T.CenterCrop(pp.input_size)] if pp.resize_size != pp.input_size else steps
    return [ResizeLongest(pp.resize_size, interp, pp.antialias), CenterCropOrPad(pp.input_size, pp.fill)]


class ResizeLongest:
    """Resize the longer side to `size`, keeping the aspect ratio (open_clip's ResizeKeepRatio, longest=1)."""

    def __init__(self, size: int, interpolation, antialias: bool = True):
        self.size, self.interpolation, self.antialias = size, interpolation, antialias

    def __call__(self, img):
        from torchvision.transforms.v2 import functional as F

        h, w = F.get_size(img)
        scale = self.size / max(h, w)
        return F.resize(img, [round(h * scale), round(w * scale)], interpolation=self.interpolation, antialias=self.antialias)

    def __repr__(self) -> str:
        return f"ResizeLongest(size={self.size}, interpolation={self.interpolation.value})"


class CenterCropOrPad:
    """Centre-crop to size x size, padding with `fill` where the image is smaller (open_clip's CenterCropOrPad)."""

    def __init__(self, size: int, fill: int = 0):
        self.size, self.fill = size, fill

    def __call__(self, img):
        from torchvision.transforms.v2 import functional as F

        h, w = F.get_size(img)
        s = self.size
        if s > w or s > h:
            pw, ph = max(s - w, 0), max(s - h, 0)
            img = F.pad(img, [pw // 2, ph // 2, (pw + 1) // 2, (ph + 1) // 2], fill=self.fill)
        return F.center_crop(img, [s, s])

    def __repr__(self) -> str:
        return f"CenterCropOrPad(size={self.size}, fill={self.fill})"


def batch_normalizer(pp: Preprocess):
    """uint8 tensors (..., 3, H, W) -> float32 scaled to [0, 1] and normalised (the last steps)."""
    import torch
    from torchvision.transforms import v2 as T

    return T.Compose([T.ToDtype(torch.float32, scale=True), T.Normalize(mean=list(pp.mean), std=list(pp.std))])


def small_image_preprocess(pp: Preprocess, sizes) -> tuple[Preprocess, str | None]:
    """The preprocessing for a source whose images are mostly smaller than the model's input.

    `sizes` are the (width, height) of a sample of the source's images. When more than half have a
    shorter side below `pp.input_size`, returns `pp` resized straight to the input size with no
    crop (squash, crop_pct 1; the model's own interpolation) and a one-line note for the build
    summary; otherwise `(pp, None)`. Call it only when the user chose no preprocessing override.

    Why (benchmarks/bench_preprocess.py, effnet-lite:lite0, 32 px photo patches, 28 px silhouettes,
    8 px digits upscaled to 32): dropping the crop raised probe accuracy on photos from 0.675 to 0.715
    (paired p = 0.04) and P@10 on photos and silhouettes, and lost significantly nowhere; bilinear
    against bicubic was a tie (better on digits, worse on silhouettes), so the model's own stays."""
    sizes = list(sizes)
    small = sum(1 for w, h in sizes if min(w, h) < pp.input_size)
    if not sizes or 2 * small <= len(sizes):
        return pp, None
    chosen = pp.override(crop_pct=1.0, resize_mode="squash")
    head = f"most images ({small} of {len(sizes)} sampled) are smaller than the {pp.input_size} px input"
    if chosen == pp:
        return pp, f"{head}; kept the model's preprocessing ({pp.describe()}), which loses no border"
    return chosen, (f"{head}; {_past(chosen.describe())} instead of the model's {pp.describe()}, "
                    f"so no border is cropped (choose with --resize-mode, --crop-pct, --interpolation)")


def _past(phrase: str) -> str:
    return "resized" + phrase[len("resize"):] if phrase.startswith("resize ") else phrase
