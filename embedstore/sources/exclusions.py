"""An exclusion list: ids to leave out of a build, a head's training or a detector's fit.

Accepted forms (one reader for `embed build`, `embed fit-head` and `embed anomalies --exclude FILE`):
- the CSV that `embed audit --out` writes (columns id, kind, score, detail), or any CSV/Parquet
  file with an `id` column; `--exclude-kinds` keeps only rows of those kinds (when a `kind` column exists);
- a plain text file with one id per line (blank lines and lines starting with '#' are skipped).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SourceError

# the kinds `embed audit --out` writes (its one vocabulary, imported by audit/run.py)
AUDIT_KINDS = ("exact_duplicate", "near_duplicate", "leak", "label_issue", "outlier")


@dataclass
class Exclusions:
    """The ids to leave out, where they came from, and how many rows each kind contributed."""

    path: str
    ids: frozenset[str]
    kinds: dict[str, int] = field(default_factory=dict)
    absent: tuple[str, ...] = ()  # kinds asked for that the list has no rows of (the audit found none)

    def __len__(self) -> int:
        return len(self.ids)

    def describe(self) -> str:
        by = ", ".join(f"{k} {n}" for k, n in sorted(self.kinds.items())) if self.kinds else ""
        none = f"; no rows of kind {', '.join(self.absent)}: nothing of that kind to leave out" if self.absent else ""
        return f"{len(self.ids)} ids from {self.path}" + (f" ({by})" if by else "") + none


def _table(p: Path) -> tuple[list[str], list[dict]]:
    from .manifest import _read_rows

    return _read_rows(p)


def read_exclusions(path: str | Path, kinds: list[str] | None = None) -> Exclusions:
    """Read an exclusion list; raises SourceError (one line, with the fix) for a missing or malformed file."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise SourceError(f"exclusion list {p} does not exist; pass the CSV written by `embed audit --out` "
                          "or a text file with one id per line")
    counts: dict[str, int] = {}
    if p.suffix.lower() in (".csv", ".parquet", ".pq"):
        columns, rows = _table(p.resolve())
        columns = [c.strip() for c in columns if c is not None]
        if "id" not in columns:
            raise SourceError(f"exclusion list {p} has no 'id' column (found: {', '.join(columns) or 'none'}); "
                              "use the CSV from `embed audit --out` or a text file with one id per line")
        wanted = set(kinds) if kinds else None
        ids = set()
        present: set[str] = set()
        for row in rows:
            row = {k.strip(): v for k, v in row.items() if k is not None}
            item = str(row.get("id") or "").strip()
            kind = str(row.get("kind") or "").strip()
            present.add(kind)
            if not item or (wanted is not None and "kind" in columns and kind not in wanted):
                continue
            ids.add(item)
            if kind:
                counts[kind] = counts.get(kind, 0) + 1
        if wanted is not None and "kind" not in columns:
            raise SourceError(f"exclusion list {p} has no 'kind' column, so kinds {', '.join(sorted(wanted))} "
                              "cannot be chosen; drop --exclude-kinds or use the CSV from `embed audit --out`")
        # a kind the audit writes but found none of is nothing to leave out (a clean dataset);
        # a kind neither the list nor the audit knows is a typo
        unknown = sorted(wanted - present - set(AUDIT_KINDS)) if wanted is not None else []
        if unknown:
            raise SourceError(f"exclusion list {p} has no rows of kind {', '.join(unknown)} (kinds there: "
                              f"{', '.join(sorted(k for k in present if k)) or 'none'}; audit kinds: {', '.join(AUDIT_KINDS)}); "
                              "fix --exclude-kinds")
        absent = tuple(sorted(wanted - present)) if wanted is not None else ()
    else:
        if kinds:
            raise SourceError(f"exclusion list {p} is a plain id list, so kinds cannot be chosen; "
                              "use the CSV from `embed audit --out`")
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise SourceError(f"exclusion list {p} is not UTF-8 text: {e}") from e
        from ..naming import from_line

        # one id a line, as `embed ls` prints them (a newline or tab in a name escaped: \n, \t)
        ids = {from_line(ln.strip()) for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")}
        absent = ()
    return Exclusions(path=str(p), ids=frozenset(ids), kinds=counts, absent=absent)
