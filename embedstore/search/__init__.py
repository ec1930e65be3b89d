"""Nearest-neighbour search over a vector set: FAISS index or exact scan, with row filters."""

import sys

from .. import CallablePackage

sys.modules[__name__].__class__ = CallablePackage  # `embedstore.search(...)` calls search.query.search


def _call_target():
    from .query import search

    return search

