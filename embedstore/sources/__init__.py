"""Sources open user paths and yield items; nothing else in the library parses user paths."""

from __future__ import annotations

from pathlib import Path

from ..errors import SourceError
from .folder import list_folder
from .items import Item, Source
from .manifest import _read_rows, read_manifest
from .texts import read_jsonl, read_text_lines, read_text_table

MANIFEST_SUFFIXES = (".csv", ".parquet", ".pq")


def open_source(path: str | Path, labels: bool = True) -> Source:
    """Images: a folder (one subfolder per class, or flat with `labels=False`) or a CSV/Parquet
    manifest with a `path` column. Texts: a .txt file (one a line), a .jsonl file, or a CSV/Parquet
    file with a `text` column. `source.kind` says which ("folder", "manifest" or "text")."""
    p = Path(path).expanduser()
    if not p.exists():
        raise SourceError(f"source {p} does not exist; pass a folder of images, a .csv/.parquet manifest, or a text file")
    if p.is_dir():
        return list_folder(p, labels=labels)
    suffix = p.suffix.lower()
    if suffix == ".txt":
        return read_text_lines(p.resolve())
    if suffix == ".jsonl":
        return read_jsonl(p.resolve())
    if suffix in MANIFEST_SUFFIXES:
        columns, rows = _read_rows(p.resolve())
        columns = [c.strip() for c in columns if c is not None]
        if "path" not in columns and "text" in columns:
            return read_text_table(p.resolve(), [{k.strip(): v for k, v in r.items() if k is not None} for r in rows], columns)
        return read_manifest(p)
    raise SourceError(f"source {p} is a file of an unknown kind; pass a folder, a .csv/.parquet manifest ('path' column "
                      "for images, 'text' column for texts), a .txt or a .jsonl file")


__all__ = ["Item", "Source", "list_folder", "read_manifest", "open_source"]
