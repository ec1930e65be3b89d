"""`--where` for search: which rows a query may return, selected before the index is searched.

'label=cat|dog,split=test' (AND across keys, OR within one), plus `id` and `uri` with shell globs
('id=cat/*', 'uri=/data/2024/*.jpg'). Keys label and split match exactly, as everywhere else."""

from __future__ import annotations

import fnmatch
import re

import numpy as np

from ..errors import OptionError

KEYS = ("label", "split", "id", "uri")


def parse_where(text: str | None) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise OptionError(f"--where '{part}' must look like key=value (keys: {', '.join(KEYS)}), e.g. label=cat|dog,split=test")
        k, v = (x.strip() for x in part.split("=", 1))
        if k not in KEYS:
            raise OptionError(f"--where: unknown key '{k}'; use {', '.join(KEYS)} (id and uri take globs: id=cat/*)")
        out.setdefault(k, []).extend(v.split("|"))
    return out


def row_mask(rows, where: str | None) -> np.ndarray | None:
    """Boolean mask over the set's rows, or None for no filter."""
    flt = parse_where(where)
    if not flt:
        return None
    m = np.ones(len(rows), dtype=bool)
    for k, values in flt.items():
        col = {"label": rows.labels, "split": rows.splits, "id": rows.ids, "uri": rows.uris}[k]
        if k in ("id", "uri") and any(ch in v for v in values for ch in "*?["):
            rx = re.compile("|".join(fnmatch.translate(v) for v in values))
            m &= np.fromiter((bool(rx.match(str(x))) for x in col), dtype=bool, count=len(col))
        else:
            m &= np.isin(col, values)
    return m
