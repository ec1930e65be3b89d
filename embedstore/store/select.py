"""Which rows of a vector set a command works on (`--where` / `--fit-on` filters) and how much
memory it may load them into (`--max-memory`)."""

from __future__ import annotations

import re

import numpy as np

from ..errors import OptionError


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


def parse_filter(text: str | None) -> dict[str, list[str]]:
    """'split=train,label=good|ok' -> {'split': ['train'], 'label': ['good', 'ok']}: AND across keys,
    OR within one. Keys label and split match exactly; id, uri and metadata columns also take
    shell globs ('id=cat/*', 'brand=acme*'). Any key other than label, split, id and uri is a
    metadata column, checked against the store's when the filter is applied (`column_mask`).
    The one parser behind --where (search, ls, recommend, the server) and --fit-on (anomalies)."""
    out: dict[str, list[str]] = {}
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        if "=" not in part or not part.split("=", 1)[0].strip():
            raise OptionError(f"filter '{part}' must look like key=value (keys: {', '.join(FILTER_KEYS)} or a metadata "
                              "column of the manifest), e.g. label=cat|dog,split=test")
        k, v = (x.strip() for x in part.split("=", 1))
        out.setdefault(k, []).extend(x for x in v.split("|") if x not in out.get(k, []))
    return out


def metadata_values(metas, key: str) -> np.ndarray:
    """Each row's value of metadata column `key` (None where the row has none), from the rows'
    canonical-JSON metadata strings; each distinct string is parsed once."""
    import json

    metas = np.asarray(metas, dtype=object)
    if len(metas) == 0:
        return np.zeros(0, dtype=object)
    uniq, inv = np.unique(metas.astype(str), return_inverse=True)
    vals = np.array([json.loads(m).get(key) if m else None for m in uniq], dtype=object)
    return vals[inv]


def metadata_keys(metas) -> list[str]:
    """The metadata columns any of the rows has."""
    import json

    return sorted({k for m in np.unique(np.asarray(metas, dtype=object).astype(str)) if m for k in json.loads(m)})


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
    for k, values in flt.items():
        globbing = any(ch in v for v in values for ch in _GLOB_CHARS)
        if k in FILTER_KEYS:
            col = columns[k]
            m &= _glob_mask(col, values) if k in ("id", "uri") and globbing else np.isin(col, values)
            continue
        metas = columns.get("meta")
        col = metadata_values(metas, k) if metas is not None else np.full(n, None, dtype=object)
        if n and all(v is None for v in col):
            have = metadata_keys(metas) if metas is not None else []
            raise OptionError(f"unknown filter key '{k}': use {', '.join(FILTER_KEYS)}" + (
                f" or a metadata column of this store ({', '.join(have)})" if have else
                " (this store has no metadata columns: a manifest's other columns become them, e.g. brand=acme)"))
        m &= _glob_mask(col, values) if globbing else np.isin(col.astype(str), values) & (col != None)  # noqa: E711
    return m


def filter_mask(rows, flt: dict[str, list[str]]) -> np.ndarray:
    """`column_mask` over a vector set's rows (`SetRows`)."""
    cols = {"label": rows.labels, "split": rows.splits, "id": rows.ids, "uri": rows.uris}
    if any(k not in FILTER_KEYS for k in flt):
        cols["meta"] = rows.metas
    return column_mask(cols, flt)


def list_items(store, where: str | None = None, status: str | None = None) -> list[dict]:
    """The store's items (id, uri, label, split, status, reason, meta: the metadata columns as a
    dict), optionally filtered by `where` (as --where) and by status ("ok" or "quarantined")."""
    import json

    from . import open_store

    flt = parse_filter(where)
    if status not in (None, "ok", "quarantined"):
        raise OptionError(f"--status must be ok or quarantined, not '{status}'")
    with open_store(store) as st:
        items = st.items()
    m = column_mask(items, flt) if flt else np.ones(len(items["id"]), dtype=bool)
    if status:
        m &= items["status"] == status
    cols = ("id", "uri", "label", "split", "status", "reason")
    return [{**dict(zip(cols, (str(items[c][i]) for c in cols))), "meta": json.loads(items["meta"][i] or "{}")}
            for i in np.flatnonzero(m)]
