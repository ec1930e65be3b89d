"""Schema 3 -> 4: each vector set in the catalog gains `row_text` (store/rowtext.py): its
row-aligned string columns again, as NUL-terminated UTF-8 bytes with a table of where each block
starts, checked by the same `row_sha256`. A reader then streams ids, labels and metadata without
making a Python object of each value (`embed export` read them at ~150 ns a value). The shards are
unchanged and the row text is derived from them, so the upgrade rewrites the catalog from them."""

from __future__ import annotations

FROM, TO = 3, 4
CATALOG_ONLY = True  # the shards are unchanged: rewriting the catalog from them is the whole upgrade


def upgrade(store) -> str:
    from . import rewrite_catalog

    return rewrite_catalog(store, FROM, TO)
