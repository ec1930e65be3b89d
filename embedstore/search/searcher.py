"""Kept for callers of the first search API: everything lives in `search.index` now."""

from __future__ import annotations

from .index import exact_search, index_search, normalise, rerank_rows as rerank

__all__ = ["exact_search", "index_search", "normalise", "rerank"]
