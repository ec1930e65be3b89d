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


FILTER_KEYS = ("label", "split")


def parse_filter(text: str | None) -> dict[str, set[str]]:
    """'split=train,label=good|ok' -> {'split': {'train'}, 'label': {'good', 'ok'}} (AND of keys, OR within)."""
    out: dict[str, set[str]] = {}
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise OptionError(f"filter '{part}' must look like key=value (keys: {', '.join(FILTER_KEYS)}), e.g. split=train,label=good")
        k, v = (x.strip() for x in part.split("=", 1))
        if k not in FILTER_KEYS:
            raise OptionError(f"unknown filter key '{k}'; use {', '.join(FILTER_KEYS)}")
        out.setdefault(k, set()).update(x for x in v.split("|"))
    return out


def filter_mask(rows, flt: dict[str, set[str]]) -> np.ndarray:
    m = np.ones(len(rows), dtype=bool)
    for k, values in flt.items():
        col = rows.labels if k == "label" else rows.splits
        m &= np.isin(col, list(values))
    return m


def list_items(store, where: str | None = None, status: str | None = None) -> list[dict]:
    """The store's items (id, uri, label, split, status, reason), optionally filtered by `where`
    (label / split, as --where) and by status ("ok" or "quarantined")."""
    from . import open_store

    flt = parse_filter(where)
    if status not in (None, "ok", "quarantined"):
        raise OptionError(f"--status must be ok or quarantined, not '{status}'")
    with open_store(store) as st:
        items = st.items()
    m = np.ones(len(items["id"]), dtype=bool)
    for k, values in flt.items():
        m &= np.isin(items[k], list(values))
    if status:
        m &= items["status"] == status
    cols = ("id", "uri", "label", "split", "status", "reason")
    return [dict(zip(cols, (str(items[c][i]) for c in cols))) for i in np.flatnonzero(m)]
