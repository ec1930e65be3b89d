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


# names of pictures (not every suffix PIL registers: .h5, .pdf, .mpg, .eps are among its stubs)
PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".bmp", ".dib", ".tif", ".tiff", ".webp",
                            ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".ico", ".jp2", ".j2k", ".heic", ".heif", ".avif"})


def _is_image(path: Path) -> bool:
    """Whether PIL recognises the file's header as an image (its pixels are not read), or its name
    is an image's (.png, .jpg, ...): a broken or empty photo is then one image the build cannot
    read, said with its reason as a folder's would be, not 'a file of an unknown kind'."""
    import warnings

    from PIL import Image, ImageFile, UnidentifiedImageError

    if path.suffix.lower() in PHOTO_SUFFIXES:
        return True
    try:
        with warnings.catch_warnings():  # a huge image is only recognised here; the build says why it refuses it
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:  # PIL's stubs name formats it cannot read (an HDF5 file, a store: not a picture)
                return not isinstance(im, ImageFile.StubImageFile)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return False


def open_source(path: str | Path, labels: bool = True, layout: str = "auto") -> Source:
    """Images: a folder or a CSV/Parquet manifest with a `path` column. A folder is read by `layout`
    (see `folder.py`): classes (`root/<class>/...`), splits (`root/<train|val|test>/<class>/...`),
    flat (no labels; `labels=False` means flat), or auto (chosen from the top-level folders). Texts:
    a .txt file (one a line), a .jsonl file, or a CSV/Parquet file with a `text` column. One image
    file is a source of that one item (its file name the id).
    `source.kind` says which ("folder", "manifest", "text" or "file"), `source.layout` how it was read."""
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
    if _is_image(p):  # one image (predict a photo, as search --image and the server take one)
        from .items import Item, stored_uri

        return _with_layout(Source(path=str(p.resolve()), kind="file", items=[Item(id=p.name, uri=stored_uri(str(p.resolve())))]),
                            "flat", "one image file")
    raise SourceError(f"source {p} is a file of an unknown kind; pass a folder, a .csv/.parquet manifest ('path' column "
                      "for images, 'text' column for texts), a .txt or a .jsonl file")


__all__ = ["LAYOUTS", "Item", "Source", "list_folder", "read_manifest", "open_source"]
