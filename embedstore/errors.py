"""The library's exception types. Messages say what was expected, what was found, and the fix."""

from __future__ import annotations


class EmbedstoreError(Exception):
    """Base class: the CLI prints these as one line and exits non-zero."""

    exit_code = 2


class SourceError(EmbedstoreError):
    """A source (folder or manifest) is missing, empty or malformed."""


class EncoderError(EmbedstoreError):
    """An encoder id is unknown, or its weights or layer cannot be loaded."""


class WeightsUnavailableError(EncoderError):
    """Weights are neither bundled nor cached, and cannot be downloaded from here."""


class OptionError(EmbedstoreError):
    """An option's value is malformed (a filter, a size, a parameter list)."""


class StoreError(EmbedstoreError):
    """A store file is missing, foreign, newer than this library, or inconsistent."""


class DamagedStoreError(StoreError):
    """A shard, catalog or index fails its checksum: its bytes are never used."""


class StoreLockedError(StoreError):
    """Another process is writing to the store."""


class ProvenanceMismatchError(StoreError):
    """Vectors were made by another encoder, weights, preprocessing or layer than expected."""


class BuildError(EmbedstoreError):
    """The build loop cannot go on (the encoder failed, vectors are not finite, ...)."""


class HeadError(EmbedstoreError):
    """A head cannot be trained, loaded or applied: bad labels, splits, files or a provenance mismatch."""


class DetectorError(EmbedstoreError):
    """An anomaly detector cannot be fitted, loaded or applied."""


class SearchError(EmbedstoreError):
    """A search query cannot be answered: unknown id, bad k, a text query on a non-CLIP store, ..."""


class FinetuneError(EmbedstoreError):
    """Fine-tuning cannot start or go on: no labels, bad --unfreeze, out of memory, an existing --out."""
