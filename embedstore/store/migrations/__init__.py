"""Numbered schema migrations: `m00N_*` upgrades a catalog from schema N-1 to N.

Schema 1 is the first; the catalog is derived from shards, so most future migrations only
need to rewrite shard attributes and then rebuild the catalog.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import StoreError

MIGRATIONS: dict[int, object] = {}  # target schema -> callable(store_path)


def migrate(path: Path, from_schema: int) -> None:
    from ..schema import SCHEMA_VERSION

    for target in range(from_schema + 1, SCHEMA_VERSION + 1):
        step = MIGRATIONS.get(target)
        if step is None:
            raise StoreError(f"{path} has schema {from_schema} and no migration to {target} exists")
        step(path)
