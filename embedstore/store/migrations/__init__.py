"""Numbered schema migrations: `mNNN_<what>.py` is the NNN-th change of the store's format. Each
says which schema it upgrades (`FROM` -> `TO`) and does it in `upgrade(store)`, called by a
writer holding the store's lock; `migrate` runs them in order from the store's schema to this
embedstore's. Readers do not migrate: they read the older schema as it is (see store/rows.py),
unless they bring a stale catalog up to date, which writes it in the current schema.

The shards are the store's truth and the catalog is derived from them, so a change to the catalog
alone migrates by rewriting the catalog; a change to the shards would rewrite the shards here.
"""

from __future__ import annotations

from ...errors import StoreError
from . import m001_row_map

MIGRATIONS = (m001_row_map,)  # in order; MIGRATIONS[k] upgrades schema k + 1 to k + 2


def migrate(store, from_schema: int) -> list[str]:
    """Upgrade `store` (open for writing) from `from_schema` to the current schema; what was done."""
    from ..schema import SCHEMA_VERSION

    notes, schema = [], from_schema
    for step in MIGRATIONS:
        if step.FROM == schema:
            notes.append(step.upgrade(store))
            schema = step.TO
    if schema != SCHEMA_VERSION:
        raise StoreError(f"{store.path} has store schema {from_schema} and no migration reaches {SCHEMA_VERSION}; "
                         "rebuild it with `embed build` into a new --store")
    return notes
