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


FILTER_KEYS = ("label", "split", "id", "uri")


def parse_filter(text: str | None) -> dict[str, list[str]]:
    """'split=train,label=good|ok' -> {'split': ['train'], 'label': ['good', 'ok']}: AND across keys,
    OR within one. Keys label and split match exactly; id and uri also take shell globs ('id=cat/*').
    The one parser behind --where (search, ls) and --fit-on (anomalies)."""
    out: dict[str, list[str]] = {}
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise OptionError(f"filter '{part}' must look like key=value (keys: {', '.join(FILTER_KEYS)}), e.g. "
                              "label=cat|dog,split=test")
        k, v = (x.strip() for x in part.split("=", 1))
        if k not in FILTER_KEYS:
            raise OptionError(f"unknown filter key '{k}'; use {', '.join(FILTER_KEYS)} (id and uri take globs: id=cat/*)")
        out.setdefault(k, []).extend(x for x in v.split("|") if x not in out.get(k, []))
    return out


def column_mask(columns: dict, flt: dict[str, list[str]]) -> np.ndarray:
    """Rows whose columns (label, split, id, uri arrays) match every key of `flt`."""
    import fnmatch
    import re

    n = len(next(iter(columns.values())))
    m = np.ones(n, dtype=bool)
    for k, values in flt.items():
        col = columns[k]
        if k in ("id", "uri") and any(ch in v for v in values for ch in "*?["):
            rx = re.compile("|".join(fnmatch.translate(v) for v in values))
            m &= np.fromiter((bool(rx.match(str(x))) for x in col), dtype=bool, count=len(col))
        else:
            m &= np.isin(col, values)
    return m


def filter_mask(rows, flt: dict[str, list[str]]) -> np.ndarray:
    """`column_mask` over a vector set's rows (`SetRows`)."""
    return column_mask({"label": rows.labels, "split": rows.splits, "id": rows.ids, "uri": rows.uris}, flt)


def list_items(store, where: str | None = None, status: str | None = None) -> list[dict]:
    """The store's items (id, uri, label, split, status, reason), optionally filtered by `where`
    (label / split, as --where) and by status ("ok" or "quarantined")."""
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
    return [dict(zip(cols, (str(items[c][i]) for c in cols))) for i in np.flatnonzero(m)]
