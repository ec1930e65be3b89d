"""Schema 2 -> 3: items gain `meta`, a manifest's other columns as canonical JSON (`embed build`
keeps them; `--where brand=acme` selects on them), and each set's `row_sha256` gains a checksum
column for it. Shards written before it have no `meta` column and read as items without metadata
(their checksums are unchanged: an all-empty `meta` hashes as if absent). The catalog is derived
from the shards, so the upgrade rewrites it from them; a rebuild from the source fills in the
metadata of items built before it (same files, new metadata: no re-encoding)."""

from __future__ import annotations

FROM, TO = 2, 3
CATALOG_ONLY = True  # the shards are unchanged: rewriting the catalog from them is the whole upgrade


def upgrade(store) -> str:
    from . import rewrite_catalog

    return rewrite_catalog(store, FROM, TO)
