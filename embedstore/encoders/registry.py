"""The encoder registry: source-prefixed ids, typed configs, and factories.

Families register with `@register_family(prefix, configs)`; `list_encoders(pattern)` answers
what exists; `create_encoder(id)` builds one, and a wrong id lists close matches.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from dataclasses import dataclass
from typing import Callable

from ..errors import EncoderError
from .config import EncoderConfig

# Family modules register themselves on import; imported lazily so `embed --help` stays fast.
_FAMILY_MODULES = {
    "effnet-lite": "embedstore.encoders.lite",
    "torchvision": "embedstore.encoders.torchvision_models",
    "open_clip": "embedstore.encoders.open_clip_models",
    "timm": "embedstore.encoders.timm_models",
    "test": "embedstore.encoders.testing",
    "local-dir": "embedstore.encoders.local_dir",
    "st": "embedstore.encoders.sentence",
}


@dataclass
class Family:
    prefix: str
    factory: Callable  # (name, weights_path) -> Encoder
    configs: dict[str, EncoderConfig]
    open_ended: bool  # accepts names beyond its table (any torchvision / open_clip model)
    available: Callable[[EncoderConfig], str]  # "bundled" | "cached" | "download" | ...


_FAMILIES: dict[str, Family] = {}


def register_family(prefix: str, configs: list[EncoderConfig], open_ended: bool = False, available=None):
    """Decorator for a family's factory function, registered beside its table of configs."""

    def deco(factory):
        _FAMILIES[prefix] = Family(
            prefix=prefix,
            factory=factory,
            configs={c.id: c for c in configs},
            open_ended=open_ended,
            available=available or (lambda cfg: "bundled"),
        )
        return factory

    return deco


def _load_family(prefix: str) -> Family | None:
    if prefix not in _FAMILIES and prefix in _FAMILY_MODULES:
        importlib.import_module(_FAMILY_MODULES[prefix])
    return _FAMILIES.get(prefix)


def _all_families() -> list[Family]:
    for prefix in _FAMILY_MODULES:
        _load_family(prefix)
    return list(_FAMILIES.values())


def list_encoders(pattern: str = "*") -> list[EncoderConfig]:
    """Known encoder configs whose id matches a glob pattern."""
    out = []
    for fam in _all_families():
        out.extend(c for c in fam.configs.values() if fnmatch.fnmatch(c.id, pattern))
    return out


def encoder_availability(cfg: EncoderConfig) -> str:
    fam = _load_family(cfg.source)
    return fam.available(cfg) if fam else "unknown"


def parse_encoder_id(encoder_id: str) -> tuple[str, str]:
    """Split 'source:name' and check the source exists; errors list close matches."""
    if ":" not in encoder_id:
        known = [c.id for c in list_encoders()]
        close = difflib.get_close_matches(encoder_id, known, n=3, cutoff=0.3) or [
            k for k in known if encoder_id.lower() in k.lower()
        ][:3]
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise EncoderError(f"encoder id '{encoder_id}' has no source prefix (expected e.g. torchvision:resnet50){hint} (see `embed encoders`)")
    prefix, name = encoder_id.split(":", 1)
    if prefix not in _FAMILY_MODULES:
        close = difflib.get_close_matches(prefix, list(_FAMILY_MODULES), n=2, cutoff=0.4)
        hint = f"; did you mean '{close[0]}:{name}'?" if close else ""
        raise EncoderError(f"unknown encoder source '{prefix}' in '{encoder_id}'; sources are {', '.join(_FAMILY_MODULES)}{hint}")
    if not name:
        raise EncoderError(f"encoder id '{encoder_id}' names no model after '{prefix}:' (see `embed encoders`)")
    return prefix, name


def get_config(encoder_id: str) -> EncoderConfig | None:
    prefix, _ = parse_encoder_id(encoder_id)
    fam = _load_family(prefix)
    return fam.configs.get(encoder_id) if fam else None


def unknown_encoder(encoder_id: str, names: list[str]) -> EncoderError:
    close = difflib.get_close_matches(encoder_id, names, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return EncoderError(f"unknown encoder '{encoder_id}'{hint} (see `embed encoders` for the list)")


def create_encoder(encoder_id: str, weights: str | None = None, layer: str | None = None):
    """Build a frozen encoder by id; `weights` loads a local file, `layer` taps an intermediate layer."""
    prefix, name = parse_encoder_id(encoder_id)
    fam = _load_family(prefix)
    if fam is None:
        raise EncoderError(f"encoder source '{prefix}' is not available in this installation")
    if encoder_id not in fam.configs and not fam.open_ended:
        raise unknown_encoder(encoder_id, list(fam.configs))
    encoder = fam.factory(name, weights)
    return encoder.select_layer(layer)

