"""Sources open user paths and yield items; nothing else in the library parses user paths."""

from __future__ import annotations

from pathlib import Path

from ..errors import SourceError
from .folder import list_folder
from .items import Item, Source
from .manifest import read_manifest

MANIFEST_SUFFIXES = (".csv", ".parquet", ".pq")


def open_source(path: str | Path, labels: bool = True) -> Source:
    """A folder (one subfolder per class, or flat with `labels=False`) or a CSV/Parquet manifest."""
    p = Path(path).expanduser()
    if not p.exists():
        raise SourceError(f"source {p} does not exist; pass a folder of images or a .csv/.parquet manifest")
    if p.is_dir():
        return list_folder(p, labels=labels)
    if p.suffix.lower() in MANIFEST_SUFFIXES:
        return read_manifest(p)
    raise SourceError(f"source {p} is a file but not a manifest; pass a folder, or a .csv/.parquet file with a 'path' column")


__all__ = ["Item", "Source", "list_folder", "read_manifest", "open_source"]
