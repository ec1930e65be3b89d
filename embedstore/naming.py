"""Small shared helpers for named things: lazy class tables, JSON documents with a format tag, names
and counts as one line of a summary."""

from __future__ import annotations

import difflib
import json
from importlib import import_module
from pathlib import Path


def lazy_class(table: dict[str, tuple[str, str]], package: str, name: str, error, noun: str):
    """`table[name]` = (module, class) inside `package`, imported on first use; an unknown name
    raises `error` with close matches and the list of known names."""
    if name not in table:
        close = difflib.get_close_matches(name, list(table), n=2)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise error(f"unknown {noun} '{name}'{hint or '.'} Known: {', '.join(table)}")
    mod, cls = table[name]
    return getattr(import_module(f".{mod}", package), cls)


def read_tagged_json(path: Path, fmt: str, error, what: str, fix: str) -> dict:
    """A JSON object whose "format" is `fmt`; anything else raises `error` naming `path` and `fix`."""
    if not path.is_file():
        raise error(f"{path.parent} is not {what} (no {path.name}); {fix}")
    try:
        doc = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"{path} is not valid JSON ({e}); {fix}") from None
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        raise error(f"{path} is not {what} (format {doc.get('format') if isinstance(doc, dict) else None!r}); {fix}")
    return doc


_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"))


def one_line(name) -> str:
    """A name (item id, label, metadata value) printed on one line: a backslash, tab, newline or
    carriage return escaped as \\\\, \\t, \\n, \\r (`embed ls`, the CLI's tables); `from_line`
    reverses it, so an id list `embed ls` wrote reads back as the ids (`--exclude`)."""
    s = str(name)
    for raw, esc in _ESCAPES:
        s = s.replace(raw, esc)
    return s


def from_line(line: str) -> str:
    """The name `one_line` printed as `line`."""
    out, i = [], 0
    while i < len(line):
        c = line[i]
        if c == "\\" and i + 1 < len(line) and line[i + 1] in "\\tnr":
            out.append({"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}[line[i + 1]])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def count(n: int, word: str, plural: str | None = None) -> str:
    """'1 class', '2 classes', '0 items': a count with its noun in the right number."""
    return f"{n} {word if n == 1 else plural or word + 's'}"
