"""Which rows of a vector set a command works on (`--where` / `--fit-on` filters) and how much
memory it may load them into (`--max-memory`)."""

from __future__ import annotations

import os
import re

import numpy as np

from ..errors import OptionError
from ..sources.items import local_path
from ..sources.items import metadata_keys  # noqa: F401 - the one reader of the metadata form, used here and by callers


def parse_bytes(text: str | int) -> int:
    """'4GB', '512MB', '1.5G', '1000000' -> bytes."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9.]+)\s*([kmgt]?)i?b?\s*", str(text).lower())
    if not m:
        raise OptionError(f"--max-memory must look like 4GB, 512MB or a number of bytes, not '{text}'")
    return int(float(m.group(1)) * 1024 ** " kmgt".index(m.group(2) or " "))


FILTER_KEYS = ("label", "split", "id", "uri")  # any other key names an item metadata column (a manifest's extra columns)
_GLOB_CHARS = "*?["


_OPS = (">=", "<=", "!=", ">", "<")  # besides "=": a filter key "year>=" holds the bound of `year >= bound`


def _split_part(part: str) -> tuple[str, str, str] | None:
    """'year >= 2020' -> ('year', '>=', '2020'): the key up to the first of = < > !, in one pass (no
    backtracking: a server query string of any length parses in linear time). None when malformed."""
    at = next((i for i, ch in enumerate(part) if ch in "=<>!"), -1)
    if at < 0:
        return None
    op = next((o for o in (">=", "<=", "!=", "=", ">", "<") if part.startswith(o, at)), None)
    if op is None:  # a lone "!"
        return None
    return part[:at].strip(), op, part[at + len(op):].strip()


def _split_unescaped(text: str, sep: str) -> list[str]:
    """`text` cut at each `sep` not preceded by a backslash (the pieces keep their escapes)."""
    return re.split(r"(?<!\\)" + re.escape(sep), text)


def _unescape(v: str) -> str:
    return re.sub(r"\\(.)", r"\1", v)


def parse_filter(text: str | None) -> dict[str, list[str]]:
    """'split=train,label=good|ok' -> {'split': ['train'], 'label': ['good', 'ok']}: AND across keys,
    OR within one. Keys label and split match exactly (no globs); id, uri and metadata columns take
    shell globs ('id=cat/*', 'brand=acme*'). Any key other than label, split, id and uri is a
    metadata column, checked against the store's when the filter is applied (`column_mask`).
    `key!=a|b` keeps rows whose value is neither (or who have none); `key>=v`, `>`, `<=`, `<` keep
    rows whose value is in range: compared as numbers when the bound is a number (values that are
    not numbers are left out), else as text (so ISO dates compare in time order); rows without a
    value are left out. They are returned under the key with its operator ('year>=': ['2020']).
    A backslash makes the next character plain: 'tag=a\\,b' matches the value "a,b".
    Metadata keys and values are compared in Unicode NFC form, as the store keeps them.
    The one parser behind --where (search, ls, recommend, the server) and --fit-on (anomalies)."""
    import unicodedata

    out: dict[str, list[str]] = {}
    for part in _split_unescaped(text or "", ","):
        if not part.strip():
            continue
        shown = " ".join(part.split())[:200]  # one line, whatever was typed
        got = _split_part(part)
        if got is None or not got[0]:
            raise OptionError(f"filter '{shown}' must look like key=value (keys: {', '.join(FILTER_KEYS)} or a metadata "
                              "column of the manifest; also !=, >=, >, <=, <), e.g. label=cat|dog,split=test,year>=2020")
        k, op, v = got
        k = unicodedata.normalize("NFC", _unescape(k))
        if op in (">", "<") and v[:1] in ("<", ">"):
            raise OptionError(f"filter '{shown}': {op}{v[0]} is not an operator; use =, !=, >=, >, <= or <")
        if op in ("=", "!=") and v[:1] in ("<", ">", "=", "!"):
            raise OptionError(f"filter '{shown}': did you mean {k}{v[0]}{'=' if v[1:2] != '=' else ''}{v.lstrip('<>=!')}? "
                              f"(to match a value that starts with '{v[0]}', write {k}{op}\\{v})")
        if not v and op in (">=", "<=", ">", "<"):
            raise OptionError(f"filter '{shown}': {op} takes one value, e.g. {k}{op}2020")
        if not v:
            raise OptionError(f"filter '{shown}' has no value; to select items that have no {k}, use {k}!=*")
        values = [unicodedata.normalize("NFC", _unescape(x)) for x in _split_unescaped(v, "|")]
        if op in (">=", "<=", ">", "<") and len(values) > 1:
            raise OptionError(f"filter '{shown}': {op} takes one value, e.g. {k}{op}2020")
        key = k if op == "=" else k + op
        if key in out:
            either = f"; for either value write {k}={'|'.join(out[key] + values)}" if op == "=" else ""
            raise OptionError(f"filter '{shown}': {k}{op} is given twice (filters are ANDed){either}")
        out[key] = list(dict.fromkeys(values))
    return out


def unfilterable(column: str) -> bool:
    """A metadata column `--where` cannot name: one named like a built-in key (that key wins), or
    empty, or holding a character the filter syntax uses."""
    return column in FILTER_KEYS or not column.strip() or any(ch in column for ch in "=,|<>!\\")


def filter_key(key: str) -> tuple[str, str]:
    """(column, operator) of a key of `parse_filter`'s result: 'year>=' -> ('year', '>=')."""
    for op in _OPS:
        if key.endswith(op):
            return key[: -len(op)], op
    return key, "="


def metadata_values(metas, key: str) -> np.ndarray:
    """Each row's value of metadata column `key` (None where the row has none), from the rows'
    canonical-JSON metadata strings; each distinct string is parsed once."""
    import json

    metas = np.asarray(metas, dtype=object)
    if len(metas) == 0:
        return np.zeros(0, dtype=object)
    parsed: dict = {}  # each distinct string parsed once; no fixed-width copy of the column
    out = np.empty(len(metas), dtype=object)
    for i, m in enumerate(metas):
        m = m.decode("utf-8") if isinstance(m, bytes) else m
        if m not in parsed:
            parsed[m] = json.loads(m).get(key) if m else None
        out[i] = parsed[m]
    return out


def _glob_mask(col, values) -> np.ndarray:
    import fnmatch
    import re

    rx = re.compile("|".join(fnmatch.translate(v) for v in values))
    return np.fromiter((x is not None and bool(rx.match(str(x))) for x in col), dtype=bool, count=len(col))


def column_mask(columns: dict, flt: dict[str, list[str]]) -> np.ndarray:
    """Rows whose columns (label, split, id, uri arrays; `meta`, the rows' metadata JSON, for any
    other key) match every key of `flt`. A key that is neither built in nor a metadata column of
    these rows is refused in one line that lists the columns there are."""
    n = len(next(iter(columns.values())))
    m = np.ones(n, dtype=bool)
    for key, values in flt.items():
        k, op = filter_key(key)
        # label and split match exactly (a label may be "[unk]"); id, uri and metadata take globs
        globbing = op in ("=", "!=") and k not in ("label", "split") and any(ch in v for v in values for ch in _GLOB_CHARS)
        if k in FILTER_KEYS:
            col = np.asarray(columns[k], dtype=object)
            col = np.where(col == "", None, col) if k in ("label", "split") else col  # "" is no label / split
        else:
            metas = columns.get("meta")
            col = metadata_values(metas, k) if metas is not None else np.full(n, None, dtype=object)
            if n and all(v is None for v in col):
                have = metadata_keys(metas) if metas is not None else []
                raise OptionError(f"unknown filter key '{k}': use {', '.join(FILTER_KEYS)}" + (
                    f" or a metadata column of this store ({', '.join(have)})" if have else
                    " (this store has no metadata columns: a manifest's other columns become them, e.g. brand=acme)"))
        if op in ("=", "!="):
            if globbing:
                hit = _glob_mask(col, values)
            else:
                wanted = set(values)  # set membership: no fixed-width copy of the column (one long value would size every row)
                # a metadata value and a wanted one that are both numbers match as numbers (price=3 matches "3.0"),
                # as ranges compare them; built-in keys (ids, paths, labels) are text
                nums = {v for v in map(_number, values) if v is not None} if k not in FILTER_KEYS else set()
                hit = np.fromiter((x is not None and (str(x) in wanted or (bool(nums) and _number(x) in nums)) for x in col),
                                  dtype=bool, count=len(col))
            m &= hit if op == "=" else ~hit
        else:
            m &= _range_mask(col, op, values[0])
    return m


def _range_mask(col, op: str, bound: str) -> np.ndarray:
    """Rows whose value `op` bound: as numbers when the bound is a number (values that are not are out
    of range), else as text; rows without the value are never in range."""
    import operator

    cmp = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}[op]
    b = _number(bound)

    def ok(x) -> bool:
        if x is None:
            return False
        if b is None:
            return cmp(str(x), bound)
        v = _number(x)
        return v is not None and cmp(v, b)  # a value that is not a number is not in a numeric range

    return np.fromiter((ok(x) for x in col), dtype=bool, count=len(col))


def _number(x) -> float | None:
    if isinstance(x, str) and "_" in x:  # float() reads "1_000" as 1000; a value of text is text
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if v == v else None  # NaN compares as text


def filter_mask(rows, flt: dict[str, list[str]]) -> np.ndarray:
    """`column_mask` over a vector set's rows (`SetRows`)."""
    cols = {"label": rows.labels, "split": rows.splits, "id": rows.ids, "uri": rows.uris}
    if any(filter_key(k)[0] not in FILTER_KEYS for k in flt):
        cols["meta"] = rows.metas
    return column_mask(cols, flt)


def list_items(store, where: str | None = None, status: str | None = None, not_in=None) -> list[dict]:
    """The store's items (id, uri, label, split, status, reason, meta: the metadata columns as a
    dict), optionally filtered by `where` (as --where) and by status: "ok", "quarantined", or
    "missing" (embedded items whose local file no longer exists: the list a build's note about
    deleted files points to, to leave them out of heads with --exclude). `not_in` (a folder or
    manifest, read as `embed build` reads it): only the items that source does not list."""
    import json

    from . import open_store

    flt = parse_filter(where)
    if status not in (None, "ok", "quarantined", "missing"):
        raise OptionError(f"--status must be ok, quarantined or missing, not '{status}'")
    listed = None
    if not_in is not None:  # read first: a bad source is one line before the store is opened
        from ..sources import open_source

        listed = set(open_source(not_in).items.column("id"))
    with open_store(store) as st:
        items = st.items()
    m = column_mask(items, flt) if flt else np.ones(len(items["id"]), dtype=bool)
    if listed is not None:
        m &= np.fromiter((str(i) not in listed for i in items["id"]), dtype=bool, count=len(items["id"]))
    if status == "missing":
        m = missing_in(items, m)[0]
    elif status:
        m &= items["status"] == status
    cols = ("id", "uri", "label", "split", "status", "reason")
    out = [{**dict(zip(cols, (str(items[c][i]) for c in cols))), "meta": json.loads(items["meta"][i] or "{}")}
           for i in np.flatnonzero(m)]
    if status == "missing":  # embedded and ok in the store, but what `ls -l` and --json should say is why they are listed
        for row in out:
            row.update(status="missing", reason="its file no longer exists (the stored vector and label are kept)")
    return out


def _file_of(uri: str, text: str = "") -> str | None:
    """The local file an item was read from, or None when it has none here: a text item (its uri
    names a row of its source file) or a uri that is not a path (an imported store's https://...)."""
    if text:
        return None
    path = local_path(uri)
    return None if "://" in path else path


def file_gone(uri: str, text: str = "") -> bool:
    """Whether an item's file no longer exists where the store says it is (deleted, or moved away
    since it was embedded): what `embed ls --status missing` lists and `embed info` counts."""
    path = _file_of(uri, text)
    return path is not None and not os.path.exists(path)


def missing_in(cols: dict, among: np.ndarray | None = None, every: int = 1, start: int = 0) -> tuple[np.ndarray, int]:
    """(mask, looked for) over item-table columns (status, uri, text): True where an ok item's file
    no longer exists (`file_gone`); `among` limits the rows looked at. `every` > 1 looks at every
    `every`-th ok row only, counted from `start` ok rows before these (a sample spread over a table
    read in chunks). The one rule `embed ls --status missing` lists and `embed info` counts by."""
    from .schema import STATUS_OK

    ok = cols["status"] == STATUS_OK
    if among is not None:
        ok &= among
    pick = np.flatnonzero(ok)
    if every > 1:
        pick = pick[(start + np.arange(len(pick))) % every == 0]
    texts = cols["text"] if "text" in cols else None
    gone, looked = np.zeros(len(ok), dtype=bool), 0
    for i in pick:
        path = _file_of(str(cols["uri"][i]), str(texts[i]) if texts is not None else "")
        if path is not None:
            looked += 1
            gone[i] = not os.path.exists(path)
    return gone, looked


def count_missing(st, every: int = 1, chunk_rows: int = 1 << 14) -> tuple[int, int]:
    """(missing, looked for): `missing_in` over the open store `st`'s item table, read
    `chunk_rows` rows at a time (`Store.item_chunks`): memory stays flat however large the store.
    One os.stat per file looked for (~2 us with the file system's cache warm)."""
    from .schema import STATUS_OK

    missing = looked = seen = 0
    for cols in st.item_chunks(("status", "uri", "text"), chunk_rows):
        gone, n = missing_in(cols, every=every, start=seen)
        missing, looked, seen = missing + int(gone.sum()), looked + n, seen + int((cols["status"] == STATUS_OK).sum())
    return missing, looked
