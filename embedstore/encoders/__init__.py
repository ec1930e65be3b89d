"""Encoders: frozen pretrained models that turn preprocessed images into vectors; they know no files."""

from .base import Encoder
from .config import EncoderConfig, Preprocess, build_transform
from .registry import create_encoder, encoder_availability, get_config, list_encoders, parse_encoder_id, register_family

__all__ = ["Encoder", "EncoderConfig", "Preprocess", "build_transform", "create_encoder", "encoder_availability",
           "get_config", "list_encoders", "parse_encoder_id", "register_family"]
