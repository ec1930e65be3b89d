"""A CSV or Parquet manifest: a `path` column (relative to the manifest) and optional label, split, id."""

from __future__ import annotations

import csv
from pathlib import Path

from ..errors import SourceError
from .items import Item, Source, metadata_json, row_problem, shown, stored_uri
from .table import ItemTable

OPTIONAL = ("label", "split", "id")
OWN = ("path",) + OPTIONAL  # every other column is item metadata (`--where brand=acme`)


def _read_rows(path: Path) -> tuple[list[str], list[dict]]:
    if path.suffix.lower() == ".csv":
        csv.field_size_limit(1 << 30)  # long cells (a review, a JSON blob) are data, not damage; the default is 128 KB
        try:
            # undecodable bytes survive as surrogates: in 'path' they name a file, elsewhere the row is quarantined
            with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
                reader = csv.DictReader(f)
                _unique_columns(path, reader.fieldnames or [])
                rows = list(reader)
                return list(reader.fieldnames or []), rows
        except (UnicodeDecodeError, csv.Error) as e:
            raise SourceError(f"manifest {path} is not a readable UTF-8 CSV: {e}") from e
    try:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for bad files
        raise SourceError(f"manifest {path} is not a readable Parquet file: {str(e).splitlines()[0][:200]}") from e
    _unique_columns(path, table.column_names)
    return table.column_names, table.to_pylist()


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
        raise SourceError(
            f"manifest {path} has no 'path' column (found: {', '.join(columns) or 'none'}); "
            f"it needs 'path' and may have {', '.join(OPTIONAL)}"
        )
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
        problem = row_problem(row, keep_bytes=("path",))
        if rel is None:
            problem = problem or "empty 'path'"
        elif problem is None and "\0" not in rel:
            f = (base / rel).resolve() if not Path(rel).is_absolute() else Path(rel)
            if not f.is_file():
                missing.append(shown(rel))
                problem = f"file not found: {shown(rel)} (paths are relative to {base})"
        if problem is not None:  # one bad row never aborts the build: it is quarantined with its reason
            item_id = f"{path.name}:row{n}" if item_id is None or "\0" in item_id else item_id
            items_id = shown(item_id).replace("\0", "\\0")
            if items_id in seen:
                items_id = f"{items_id}#row{n}"
            seen[items_id] = n
            items.append(Item(id=items_id, uri=shown(rel or "").replace("\0", "\\0"), problem=f"manifest row {n}: {problem}"))
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
