"""Query files for batch search: a folder of images, a .txt of text queries (one a line), a
CSV / Parquet table with an `id` column of stored items, or a .npy of query vectors (one a row).
Yields (name, payload) in a stable order."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from ..errors import SourceError


def read_queries(path: str | Path) -> tuple[str, list[tuple[str, object]], list[dict]]:
    """(kind, [(name, payload)], skipped): kind "image" (payload: file path), "text" (the text), "id",
    or "vector" (name: the row number, payload: the .npy file; read with `search.query.vectors_from_file`);
    skipped: [{query, reason}] for what the file holds that is not a query (a .txt's empty lines)."""
    skipped: list[dict] = []
    p = Path(path)
    if not p.exists():
        raise SourceError(f"--queries {p} does not exist; give a folder of images, a .txt of texts or a CSV with an id column")
    if p.is_dir():
        # a symbolic link that leads nowhere is kept as a query: the search lists it as skipped, with
        # its reason, as it does an image it cannot read (it was dropped without a word)
        files = sorted(f for f in p.rglob("*") if (f.is_file() or (f.is_symlink() and not f.exists()))
                       and not any(part.startswith(".") for part in f.relative_to(p).parts))
        out = [(str(f.relative_to(p)), f) for f in files]
        kind = "image"
    elif p.suffix.lower() == ".txt":
        from .texts import read_text_lines

        # read as a build reads a .txt: a line that is not valid UTF-8 is refused here, never searched
        # as replacement characters
        src = read_text_lines(p) if p.read_bytes().strip() else None  # an empty file: "holds no queries" below
        items = list(src.items) if src is not None else []
        skipped = [{"query": q, "reason": why} for why, qs in (src.skipped if src is not None else {}).items() for q in qs]
        bad = next((it for it in items if it.problem), None)
        if bad is not None:
            raise SourceError(f"--queries {p} line {bad.uri.rsplit('#L', 1)[-1]}: {bad.problem}; fix or remove that line")
        out = [(it.text, it.text) for it in items]
        kind = "text"
    elif p.suffix.lower() in (".csv", ".parquet", ".pq"):
        out = [(i, i) for i in _ids(p)]
        kind = "id"
    elif p.suffix.lower() == ".npy":
        import numpy as np

        try:
            shape = np.load(p, mmap_mode="r", allow_pickle=False).shape
        except (OSError, ValueError) as e:
            raise SourceError(f"--queries {p} cannot be read as a numpy array ({str(e).splitlines()[0][:100]})") from None
        out = [(str(i), p) for i in range(shape[0] if len(shape) == 2 else 1 if len(shape) == 1 else 0)]
        kind = "vector"
    else:
        raise SourceError(f"--queries {p}: expected a folder of images, a .txt (one text a line), a .csv/.parquet with an id column "
                          "or a .npy of vectors (one a row)")
    if not out:
        raise SourceError(f"--queries {p} holds no queries (an empty {'folder' if p.is_dir() else 'file'})")
    return kind, out, skipped


def _ids(p: Path) -> Iterator[str]:
    if p.suffix.lower() == ".csv":
        import csv

        with open(p, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "id" not in reader.fieldnames:
                texts = " (text queries go in a .txt file, one a line)" if "text" in (reader.fieldnames or []) else ""
                raise SourceError(f"--queries {p} has no 'id' column (columns: {', '.join(reader.fieldnames or []) or 'none'})"
                                  f"; a CSV of queries names stored items by id{texts}")
            return [r["id"] for r in reader if r["id"]]
    import pyarrow.parquet as pq

    t = pq.read_table(p)
    if "id" not in t.column_names:
        raise SourceError(f"--queries {p} has no 'id' column (columns: {', '.join(t.column_names)})")
    return [str(x) for x in t.column("id").to_pylist() if x]
