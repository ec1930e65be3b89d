"""Schema 1 -> 2: each vector set in the catalog gains `item_row` (its rows' positions in the item
table), `row_sha256` (a checksum per block of its row-aligned metadata) and `row_map_sha256` (a
checksum of its virtual dataset's row-to-shard map). They let a reader stream rows with their
labels in flat memory, and check the map and metadata it reads. Shards are unchanged; all three
are derived from them, so the upgrade rewrites the catalog from the shards, and says whether any
item or row differs from what the schema 1 catalog listed."""

from __future__ import annotations

FROM, TO = 1, 2
CATALOG_ONLY = True  # the shards are unchanged: rewriting the catalog from them is the whole upgrade


def upgrade(store) -> str:
    from . import rewrite_catalog

    return rewrite_catalog(store, FROM, TO)
