"""The embedding service: the one way files, image bytes and texts become vectors, exactly as a
vector set's vectors were made (encoder, preprocessing, precision, normalisation, stored dtype)."""

from .service import EmbeddingService, layer_for, make_encoder

__all__ = ["EmbeddingService", "layer_for", "make_encoder"]
