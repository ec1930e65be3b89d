"""Text sources: a .txt file (one item a line), or CSV / Parquet / JSONL with a `text` column and
optional label, split and id columns. Empty lines are skipped and counted; lines that are not
valid UTF-8 become items with a problem, which the build quarantines with that reason."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import SourceError
from .items import Item, Source, metadata_json, row_problem, shown
from .table import ItemTable

TEXT_SUFFIXES = (".txt", ".jsonl")


def _text_item(path: Path, n: int, raw, label=None, split=None, item_id=None, where: str = "L",
               meta: str | None = None, problem: str | None = None) -> Item | None:
    """An item for row/line `n`, None for an empty one; `problem`: why the row cannot be used (it
    is quarantined with that reason, its cells left out)."""
    if problem is not None:
        clean_id = (shown(str(item_id)).replace("\0", "\\0").strip() or None) if item_id is not None else None
        return Item(id=clean_id or f"{where}{n}", uri=f"{path}#{where}{n}", problem=f"row {n}: {problem}")
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            problem, raw = f"not valid UTF-8 ({e.reason} at byte {e.start})", None
        if raw is not None and "\0" in raw:
            problem, raw = "NUL byte in the text", None
    text = None if raw is None else str(raw).strip()
    if problem is None and not text:
        return None
    clean = lambda v: (str(v).strip() or None) if v is not None else None  # noqa: E731
    sp = clean(split)
    return Item(id=clean(item_id) or f"{where}{n}", uri=f"{path}#{where}{n}", label=clean(label),
                split=sp.lower() if sp else None, text=text, problem=problem, meta=meta)


def _finish(path: Path, items: ItemTable, empty: list[str], has_labels: bool, has_splits: bool,
            has_metadata: bool = False) -> Source:
    repeat = items.repeated_id()
    if repeat is not None:
        raise SourceError(f"text source {path} has the id '{repeat[0]}' twice ({repeat[1]} and {repeat[2]}); ids must be unique")
    if not items:
        raise SourceError(f"text source {path} has no non-empty texts")
    skipped = {"empty line": empty} if empty else {}
    return Source(path=str(path), kind="text", items=items, skipped=skipped, has_labels=has_labels, has_splits=has_splits,
                  has_metadata=has_metadata)


def read_text_lines(path: Path) -> Source:
    """One item per line of a .txt file; ids L1, L2, ... (line numbers)."""
    items, empty = ItemTable(), []
    n, last = 0, b""
    with open(path, "rb") as f:  # line by line: the file's lines are never all held at once
        for n, line in enumerate(f, start=1):
            last = line
            it = _text_item(path, n, line.rstrip(b"\n").rstrip(b"\r"))
            if it is None:
                empty.append(f"{path.name}#L{n}")
            else:
                items.append(it)
    ends_twice = last == b"\n" and n >= 2  # the file ends with an empty line
    if last.endswith(b"\n"):  # numbered as split on newlines: one more, empty line after the last newline
        n += 1
        empty.append(f"{path.name}#L{n}")
    if empty and empty[-1] == f"{path.name}#L{n}" and not ends_twice:
        empty.pop()  # the newline that ends the file is not an empty item
    return _finish(path, items, empty, False, False)


def read_text_table(path: Path, rows: list[dict], columns: list[str], where: str = "row") -> Source:
    """Rows with a `text` column (from CSV, Parquet or JSONL)."""
    if "text" not in columns:
        raise SourceError(f"{path} has no 'text' column (found: {', '.join(columns) or 'none'}); a text source needs 'text' "
                          "and may have label, split, id (an image manifest needs 'path')")
    items, empty = ItemTable(), []
    for n, row in enumerate(rows, start=1):
        n = row.pop("__line__", n)  # JSONL keeps its line numbers
        problem = row_problem({k: v for k, v in row.items() if not k.startswith("__")})
        it = _text_item(path, n, row.get("text"), row.get("label"), row.get("split"), row.get("id"), where,
                        meta=None if problem else metadata_json(row, ("text", "label", "split", "id")), problem=problem)
        if it is None:
            empty.append(f"{path.name}#{where}{n}")
        else:
            items.append(it)
    return _finish(path, items, empty, "label" in columns, "split" in columns,
                   any(c not in ("text", "label", "split", "id") and not c.startswith("__") for c in columns))


def read_jsonl(path: Path) -> Source:
    rows, columns = [], []
    for n, line in enumerate(path.read_bytes().split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SourceError(f"{path} line {n} is not valid JSON ({e}); fix or remove that line") from None
        if not isinstance(row, dict):
            raise SourceError(f"{path} line {n} is not a JSON object with a 'text' field")
        columns.extend(k for k in row if k not in columns)
        rows.append({**row, "__line__": n})
    return read_text_table(path, rows, columns, where="L")
