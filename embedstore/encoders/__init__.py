"""Encoders: frozen pretrained models that turn preprocessed images into vectors; they know no files.

Names load on first use (torch comes with `Encoder`), so importing a config or the registry stays fast."""

from __future__ import annotations

_LAZY = {
    "Encoder": "base",
    "EncoderConfig": "config",
    "Preprocess": "config",
    "build_transform": "config",
    "create_encoder": "registry",
    "encoder_availability": "registry",
    "get_config": "registry",
    "list_encoders": "registry",
    "parse_encoder_id": "registry",
    "register_family": "registry",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'embedstore.encoders' has no attribute {name!r}")
