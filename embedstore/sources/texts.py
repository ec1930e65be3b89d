"""Text sources: a .txt file (one item a line), or CSV / Parquet / JSONL with a `text` column and
optional label, split and id columns. Empty lines are skipped and counted; lines that cannot be
used (not valid UTF-8; in JSONL also not JSON, not an object, no `text` field or one that is not a
string) become items with a problem, which the build quarantines with that reason."""

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
        return Item(id=clean_id or f"{where}{n}", uri=f"{path}#{where}{n}",
                    problem=f"{'line' if where == 'L' else 'row'} {n}: {problem}")
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
            has_metadata: bool = False, empty_is: str = "empty line") -> Source:
    repeat = items.repeated_id()
    if repeat is not None:
        raise SourceError(f"text source {path} has the id '{repeat[0]}' twice ({repeat[1]} and {repeat[2]}); ids must be unique")
    if not items:
        raise SourceError(f"text source {path} has no non-empty texts")
    skipped = {empty_is: empty} if empty else {}
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
        problem = row.pop("__problem__", None) or row_problem({k: v for k, v in row.items() if not k.startswith("__")})
        it = _text_item(path, n, row.get("text"), row.get("label"), row.get("split"), row.get("id"), where,
                        meta=None if problem else metadata_json(row, ("text", "label", "split", "id")), problem=problem)
        if it is None:
            empty.append(f"{path.name}#{where}{n}")
        else:
            items.append(it)
    return _finish(path, items, empty, "label" in columns, "split" in columns,
                   any(c not in ("text", "label", "split", "id") and not c.startswith("__") for c in columns), empty_is="row with an empty text")


def _json_kind(v) -> str:
    """What a JSON value is, as a reason says it: 'a number (12345)', 'a list', ..."""
    if isinstance(v, bool):
        return f"a boolean ({json.dumps(v)})"
    if isinstance(v, (int, float)):
        return f"a number ({json.dumps(v)[:40]})"
    return {list: "a list", dict: "an object", str: "a string"}.get(type(v), "null")


def _jsonl_row_problem(row: dict) -> str | None:
    """Why a JSONL object cannot be a text item as it is: no `text` field (null counts as none), a
    `text` that is not a string, or a label / split / id that is a list or an object (a number
    there reads as its digits). Such rows are quarantined, never embedded as Python's str() of them."""
    text = row.get("text")
    if text is None:
        return "no 'text' field" + (" (it is null)" if "text" in row else "")
    if not isinstance(text, str):
        return f"'text' is {_json_kind(text)}, not a string"
    for k in ("label", "split", "id"):
        if isinstance(row.get(k), (list, dict)):
            return f"'{k}' is {_json_kind(row[k])}, not a string"
    return None


def read_jsonl(path: Path) -> Source:
    """One item per line of a .jsonl file: a JSON object with a `text` field (ids L<line> unless an
    `id` field names one). A line that cannot be used (not valid UTF-8, not JSON, not an object, no
    string `text`) is quarantined with the reason under the id L<line> (or its `id`), so fixing the
    line and building again embeds it. A file in which no line is a JSON object, or no object has a
    `text` field, is refused: that is the wrong file or field, not a bad row."""
    rows, columns, first_bad, objects, texts = [], [], None, 0, 0
    for n, line in enumerate(path.read_bytes().split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except UnicodeDecodeError as e:
            row, problem = None, f"not valid UTF-8 ({e.reason} at byte {e.start})"
        except json.JSONDecodeError as e:
            row, problem = None, f"not valid JSON ({e})"
        else:
            problem = None if isinstance(row, dict) else f"{_json_kind(row)}, not a JSON object with a 'text' field"
        if problem is not None:
            first_bad = first_bad or (n, problem)
            rows.append({"__line__": n, "__problem__": problem})
            continue
        objects += 1
        texts += row.get("text") is not None
        columns.extend(k for k in row if k not in columns)
        problem = _jsonl_row_problem(row)
        if isinstance(row.get("id"), (list, dict)):  # no id to keep: the line's own (L<n>)
            row = {**row, "id": None}
        rows.append({**row, "__line__": n, "__problem__": problem})
    if not rows:
        raise SourceError(f"{path} is empty; a .jsonl text source holds one JSON object a line, with a 'text' field")
    if first_bad is not None and not objects:
        raise SourceError(f"{path} has no line that is a JSON object (line {first_bad[0]}: {first_bad[1]}); a .jsonl text "
                          "source holds one object a line, with a 'text' field")
    if objects and not texts:
        found = "'text' is null on every line" if "text" in columns else f"fields found: {', '.join(columns) or 'none'}"
        raise SourceError(f"{path} has no line with a 'text' field ({found}); a text source needs 'text' and may have "
                          "label, split, id (an image manifest is a CSV or Parquet file with 'path')")
    return read_text_table(path, rows, columns, where="L")
