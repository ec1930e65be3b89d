"""Sources open user paths and yield items; nothing else in the library parses user paths."""

from __future__ import annotations

from pathlib import Path

from ..errors import SourceError
from .folder import LAYOUTS, list_folder
from .items import Item, Source
from .manifest import _read_rows, read_manifest
from .texts import read_jsonl, read_text_lines, read_text_table

MANIFEST_SUFFIXES = (".csv", ".parquet", ".pq")


def _with_layout(src: Source, layout: str, how: str) -> Source:
    src.layout, src.layout_from = layout, how
    return src


def open_source(path: str | Path, labels: bool = True, layout: str = "auto") -> Source:
    """Images: a folder or a CSV/Parquet manifest with a `path` column. A folder is read by `layout`
    (see `folder.py`): classes (`root/<class>/...`), splits (`root/<train|val|test>/<class>/...`),
    flat (no labels; `labels=False` means flat), or auto (chosen from the top-level folders). Texts:
    a .txt file (one a line), a .jsonl file, or a CSV/Parquet file with a `text` column.
    `source.kind` says which ("folder", "manifest" or "text"), `source.layout` how it was read."""
    if layout not in LAYOUTS:
        raise SourceError(f"--layout must be one of {', '.join(LAYOUTS)}, not '{layout}'")
    p = Path(path).expanduser()
    if not p.exists():
        raise SourceError(f"source {p} does not exist; pass a folder of images, a .csv/.parquet manifest, or a text file")
    if p.is_dir():
        return list_folder(p, labels=labels, layout=layout)
    if layout != "auto":
        raise SourceError(f"--layout {layout} applies to folders; {p} is a file, whose columns say its labels and splits")
    suffix = p.suffix.lower()
    if suffix == ".txt":
        return _with_layout(read_text_lines(p.resolve()), "text", "a text file (one item a line)")
    if suffix == ".jsonl":
        return _with_layout(read_jsonl(p.resolve()), "text", "its columns")
    if suffix in MANIFEST_SUFFIXES:
        columns, rows = _read_rows(p.resolve())
        columns = [c.strip() for c in columns if c is not None]
        if "path" not in columns and "text" in columns:
            src = read_text_table(p.resolve(), [{k.strip(): v for k, v in r.items() if k is not None} for r in rows], columns)
            return _with_layout(src, "text", "its columns")
        return _with_layout(read_manifest(p), "manifest", "its columns")
    raise SourceError(f"source {p} is a file of an unknown kind; pass a folder, a .csv/.parquet manifest ('path' column "
                      "for images, 'text' column for texts), a .txt or a .jsonl file")


__all__ = ["LAYOUTS", "Item", "Source", "list_folder", "read_manifest", "open_source"]
