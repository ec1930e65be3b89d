"""`--where` for search: which rows a query may return, selected before the index is searched.

'label=cat|dog,split=test' (AND across keys, OR within one), plus `id` and `uri` with shell globs
('id=cat/*', 'uri=/data/2024/*.jpg'), and any metadata column a manifest brought ('brand=acme',
globs too), with != and ranges (year>=2020). Keys label and split match exactly, as everywhere else."""

from __future__ import annotations

import numpy as np

from ..store.select import FILTER_KEYS as KEYS, filter_mask, parse_filter  # noqa: F401 - the one filter


def parse_where(text: str | None) -> dict[str, list[str]]:
    return parse_filter(text)


def row_mask(rows, where: str | None) -> np.ndarray | None:
    """Boolean mask over the set's rows, or None for no filter."""
    flt = parse_filter(where)
    return filter_mask(rows, flt) if flt else None
