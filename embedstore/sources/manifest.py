"""A CSV or Parquet manifest: a `path` column (relative to the manifest) and optional label, split, id."""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

from ..errors import SourceError
from .items import Item, Source, metadata_json, row_problem, shown, stored_uri
from .table import ItemTable

OPTIONAL = ("label", "split", "id")
OWN = ("path",) + OPTIONAL  # every other column is item metadata (`--where brand=acme`)


def _read_rows(path: Path) -> tuple[list[str], list[dict]]:
    if path.suffix.lower() == ".csv":
        csv.field_size_limit(1 << 30)  # long cells (a review, a JSON blob) are data, not damage; the default is 128 KB
        with open(path, "rb") as f:
            head = f.read(4)
        if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
            raise SourceError(f"{path} is UTF-16 text; save it as UTF-8 (e.g. \"CSV UTF-8\" in a spreadsheet)")
        if not head.strip():
            raise SourceError(f"{path} is empty; a CSV here has a header row ('path' for images, 'text' for texts) and one row an item")
        reader, done = None, 1
        try:
            # undecodable bytes survive as surrogates: in 'path' they name a file, elsewhere the row is quarantined;
            # strict: a quote left open is an error at its line, not the rest of the file read into one cell
            with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
                reader = csv.DictReader(f, strict=True)
                _unique_columns(path, reader.fieldnames or [])
                rows = []
                for row in reader:
                    extra = row.pop(None, None)  # fields beyond the header's: csv keeps them under None
                    if extra is not None:  # quarantined, not dropped: an unquoted comma split a cell
                        n_fields = len(reader.fieldnames or []) + len(extra)
                        row["__problem__"] = (f"{n_fields} fields where the header has {len(reader.fieldnames or [])} "
                                              "(a comma inside a cell? put the cell in double quotes)")
                    rows.append(row)
                    done = reader.line_num  # the last line of the last good row
                return list(reader.fieldnames or []), rows
        except (UnicodeDecodeError, csv.Error) as e:
            where = f" (the row starting at line {done + 1})" if reader is not None else ""
            raise SourceError(f"manifest {path} is not a readable CSV{where}: {e}; a quote opened in a cell must be closed, "
                              "and a quote inside a quoted cell is written twice (\"\")") from e
    try:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for bad files
        raise SourceError(f"manifest {path} is not a readable Parquet file: {str(e).splitlines()[0][:200]}") from e
    _unique_columns(path, table.column_names)
    return table.column_names, table.to_pylist()


def column_hint(columns: list[str]) -> str:
    """What to change in a header that names neither 'path' nor 'text'."""
    if any(any(0xDC80 <= ord(ch) <= 0xDCFF for ch in c) for c in columns):  # undecodable bytes kept as surrogates
        return "its header row is not UTF-8 (e.g. Latin-1 from a spreadsheet): save the file as UTF-8 (\"CSV UTF-8\")"
    near = [c for c in columns if c.lower() in ("path", "text") and c not in ("path", "text")]
    if near:
        return f"column names are case-sensitive: rename '{near[0]}' to '{near[0].lower()}'"
    if len(columns) == 1 and any(sep in columns[0] for sep in ";\t|"):
        return f"it reads as one column '{columns[0][:60]}': a CSV here is comma-separated; save it with commas (or as .parquet)"
    return f"an image manifest needs 'path' (and may have {', '.join(OPTIONAL)}); a text table needs 'text'"


def _unique_columns(path: Path, names) -> None:
    """Refuse a header that names a column twice: a row would keep only one of the two values."""
    seen = set()
    for n in names:
        key = (n or "").strip()
        if key in seen:
            raise SourceError(f"{path} has the column '{key}' twice; rename one (each row would keep only one of its values)")
        seen.add(key)


def _clean(v) -> str | None:
    if v is None:
        return None
    s = str(v).strip()
    return s or None


def read_manifest(path: Path) -> Source:
    path = path.resolve()
    columns, rows = _read_rows(path)
    columns = [c.strip() for c in columns if c is not None]
    if "path" not in columns:
        raise SourceError(f"{path} has no 'path' column (images) or 'text' column (texts) (found: {', '.join(shown(c) for c in columns) or 'none'}); "
                          f"{column_hint(columns)}")
    if not rows:
        raise SourceError(f"manifest {path} has no rows")
    base = path.parent
    items = ItemTable()
    missing: list[str] = []
    seen: dict[str, int] = {}
    for n, row in enumerate(rows, start=2):
        row = {k.strip(): v for k, v in row.items() if k is not None}
        rel = _clean(row.get("path"))
        item_id = _clean(row.get("id")) or rel
        problem = row.pop("__problem__", None) or row_problem(row, keep_bytes=("path",))
        if rel is None:
            problem = problem or "empty 'path'"
        elif problem is None and re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", rel) and not rel.startswith("file://"):
            problem = (f"{shown(rel)} is a URL: a manifest lists local files (download them first, e.g. with "
                       "img2dataset, and list the downloaded paths)")
        elif problem is None and "\0" not in rel:
            f = (base / rel).resolve() if not Path(rel).is_absolute() else Path(rel)
            if f.is_dir():
                problem = (f"{shown(rel)} is a folder, not a file: list its files one a row, or build the folder "
                           "itself (`embed build FOLDER`)")
            elif not f.is_file():
                missing.append(shown(rel))
                gone = " (a broken symbolic link)" if f.is_symlink() or os.path.islink(base / rel) else ""
                problem = f"file not found: {shown(rel)}{gone} (paths are relative to {base})"
        if problem is not None:  # one bad row never aborts the build: it is quarantined with its reason
            item_id = f"{path.name}:row{n}" if item_id is None or "\0" in item_id else item_id
            items_id = shown(item_id).replace("\0", "\\0")
            if items_id in seen:
                items_id = f"{items_id}#row{n}"
            seen[items_id] = n
            label = _clean(row.get("label"))  # kept, as a quarantined file of a folder keeps its class
            items.append(Item(id=items_id, uri=shown(rel or "").replace("\0", "\\0"), problem=f"manifest row {n}: {problem}",
                              label=None if label is None or "\0" in label else shown(label)))
            continue
        if item_id in seen:
            raise SourceError(f"manifest {path} has the id '{shown(item_id)}' twice (rows {seen[item_id]} and {n}); ids must be unique")
        seen[item_id] = n
        split = _clean(row.get("split"))
        items.append(Item(id=shown(item_id), uri=stored_uri(str(f)), label=_clean(row.get("label")),
                          split=split.lower() if split else None, meta=metadata_json(row, OWN)))
    if missing and len(missing) == len(rows):  # nothing found at all: the paths are wrong, not one row
        raise SourceError(
            f"manifest {path} lists {len(missing)} file(s) that do not exist, e.g. {', '.join(missing[:3])} "
            f"(paths are relative to {base}); fix the paths or remove those rows"
        )
    return Source(
        path=str(path),
        kind="manifest",
        items=items,
        has_labels="label" in columns,
        has_splits="split" in columns,
        has_metadata=any(c not in OWN for c in columns),
    )
