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


def renamed_from(store_path: str | Path) -> Path | None:
    """The data folder the catalog file names (its `shard_dir`, e.g. `photos.h5.d/shards`) when the
    store's own `sidecar_dir` is missing and that one exists beside it: the file was renamed without
    its folder. None otherwise."""
    p = Path(store_path)
    if sidecar_dir(p).exists():
        return None
    try:
        import h5py

        with h5py.File(p, "r") as f:
            shard_dir = f.attrs.get("shard_dir")
    except Exception:  # noqa: BLE001 - no readable catalog: nothing recorded
        return None
    if isinstance(shard_dir, bytes):
        shard_dir = shard_dir.decode()
    if not shard_dir:
        return None
    old = p.with_name(str(shard_dir).split("/", 1)[0])
    return old if old != sidecar_dir(p) and old.is_dir() else None


def without_folder(store_path: Path, old: Path) -> tuple[str, str]:
    """(what happened, the fix) for a store file whose catalog names the folder `old` beside it
    (`renamed_from`): renamed without its folder, or copied without it while the original, which
    still uses that folder, stays (renaming the folder would break the original then)."""
    new = sidecar_dir(store_path).name
    original = old.with_name(old.name[:-2])
    if original.is_file() and original != Path(store_path):
        return ((f"the file was copied from {original.name} without its folder; a store is NAME.h5 and NAME.h5.d"),
                f"copy {old.name} to {new} ({original.name} still uses {old.name})")
    return ("the file was renamed without its folder; a store is NAME.h5 and NAME.h5.d",
            f"rename {old.name} to {new}, or the file back to {original.name}")


def missing_shards_reason(store_path: str | Path, lost: list[str], shown: str | None = None) -> str:
    """Why shards the catalog lists are not there, in the user's words: the folder went with another
    name (rename it back), the data folder is missing (copy both), or some shard files are gone."""
    p = Path(store_path)
    shown = shown or p.name
    sidecar = sidecar_dir(p)
    old = renamed_from(p)
    if old is not None:
        how, fix = without_folder(p, old)
        return f"{shown}'s data folder is {old.name} beside it, not {sidecar.name} ({how}): {fix}"
    if not sidecar.exists():
        return f"the store's data folder {sidecar} is missing (a store is {p.name} and {sidecar.name}: copy both)"
    return f"{len(lost)} shard file(s) listed in {shown} are missing from {sidecar / 'shards'} (e.g. {lost[0]})"


def key_fields(provenance: dict) -> dict:
    """The key fields of a provenance in one form, whether given as made (nested values as objects:
    an encoder's `provenance()`) or as stored (nested values as JSON text, numbers as numpy scalars:
    a set's or shard's attributes), so a set is named the same from either."""
    from .provenance import _decode_attrs

    return _decode_attrs({k: provenance[k] for k in KEY_FIELDS})


def provenance_key(provenance: dict) -> str:
    """12 hex of the sha256 of the key fields' canonical JSON (`key_fields`)."""
    return hashlib.sha256(canonical_json(key_fields(provenance)).encode()).hexdigest()[:12]


def set_name_for(provenance: dict) -> str:
    """A readable, filesystem-safe vector-set name: encoder slug + provenance key. Every writer
    names sets here and `embed verify` checks each set's name here, from its shards' attributes."""
    return f"{_slug(provenance)}-{provenance_key(provenance)}"


def _slug(provenance: dict) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(key_fields(provenance)["encoder"])).strip("_")


def early_import_set_name(provenance: dict) -> str | None:
    """The name `embed import` gave its sets until it named them by `set_name_for`, as builds do:
    its key hashed the stored `preprocess` text ("{}") as a string, not as the object it encodes.
    None when `preprocess` is not stored as text. Only `embed verify` asks, to tell such a set,
    on users' disks since, from a shard whose provenance was changed."""
    fields, raw = key_fields(provenance), provenance["preprocess"]
    if not isinstance(raw, (str, bytes)):
        return None
    fields["preprocess"] = raw.decode() if isinstance(raw, bytes) else str(raw)
    return f"{_slug(provenance)}-{hashlib.sha256(canonical_json(fields).encode()).hexdigest()[:12]}"
