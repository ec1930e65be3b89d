"""Names and constants of the on-disk layout (documented in the README's "Store layout")."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from ..encoders.config import canonical_json

FORMAT = "embedstore"
# 2: each set's item_row, row_sha256 and row_map_sha256 (migrations/m001_row_map.py); 3: item metadata (m002);
# 4: each set's row text, its string columns as NUL-terminated bytes read without an object per value (m003)
SCHEMA_VERSION = 4
# text: text items only; meta: a manifest's other columns as canonical JSON (sources.items.metadata_json)
ITEM_STR_COLUMNS = ("id", "uri", "label", "split", "sha256", "status", "reason", "text", "meta")
# Columns added after checksums existed: all empty, they hash as if absent, so shards written before them keep their checksums.
LATE_STR_COLUMNS = ("meta",)
ITEM_INT_COLUMNS = ("size", "mtime_ns")
ITEM_COLUMNS = ITEM_STR_COLUMNS + ITEM_INT_COLUMNS
STATUS_OK = "ok"
STATUS_QUARANTINED = "quarantined"

# The provenance fields that make vectors comparable; any difference means another vector set.
KEY_FIELDS = ("encoder", "weights_sha256", "preprocess", "layer", "pooling", "normalize", "dtype", "dim", "modality")


def sidecar_dir(store_path: str | Path) -> Path:
    """Where a store keeps its shards, indexes and lock: `<store>.d/` beside the file."""
    p = Path(store_path)
    return p.with_name(p.name + ".d")


def provenance_key(provenance: dict) -> str:
    return hashlib.sha256(canonical_json({k: provenance[k] for k in KEY_FIELDS}).encode()).hexdigest()[:12]


def set_name_for(provenance: dict) -> str:
    """A readable, filesystem-safe vector-set name: encoder slug + provenance key."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", provenance["encoder"]).strip("_")
    return f"{slug}-{provenance_key(provenance)}"
