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
from . import m001_row_map, m002_item_metadata, m003_row_text

MIGRATIONS = (m001_row_map, m002_item_metadata, m003_row_text)  # in order; MIGRATIONS[k] upgrades schema k + 1 to k + 2


def migrate(store, from_schema: int) -> list[str]:
    """Upgrade `store` (open for writing) from `from_schema` to the current schema; what was done."""
    from ..schema import SCHEMA_VERSION

    notes, schema = [], from_schema
    steps = [m for m in MIGRATIONS if m.FROM >= schema]
    while steps and steps[0].FROM == schema:
        run = [steps.pop(0)]  # consecutive catalog-only steps are one rewrite of the catalog
        while getattr(run[-1], "CATALOG_ONLY", False) and steps and getattr(steps[0], "CATALOG_ONLY", False):
            run.append(steps.pop(0))
        if len(run) > 1:
            notes.append(rewrite_catalog(store, schema, run[-1].TO))
        else:
            notes.append(run[0].upgrade(store))
        schema = run[-1].TO
    if schema != SCHEMA_VERSION:
        raise StoreError(f"{store.path} has store schema {from_schema} and no migration reaches {SCHEMA_VERSION}; "
                         "rebuild it with `embed build` into a new --store")
    return notes


def _listed(path) -> tuple[set, dict]:
    import h5py

    with h5py.File(path, "r") as f:
        items = set(f["items/id"].asstr()[()]) if "items" in f else set()
        rows = {name: len(g["ids"]) for name, g in f["vectors"].items()} if "vectors" in f else {}
    return items, rows


def rewrite_catalog(store, from_schema: int, to_schema: int) -> str:
    """A catalog-only migration: rewrite the catalog from the shards (in the current schema) and
    say whether any item or row differs from what the old catalog listed."""
    before_items, before_rows = _listed(store.path)
    store.refresh(index=False)
    after_items, after_rows = _listed(store.path)
    lost = before_items - after_items
    what = (f"upgraded the catalog {store.path.name} from schema {from_schema} to {to_schema} "
            f"({len(after_items)} items, {sum(after_rows.values())} rows")
    if lost or any(after_rows.get(k, 0) < n for k, n in before_rows.items()):
        return what + f"; {len(lost)} item(s) it listed are not in the shards: {', '.join(sorted(lost)[:3])})"
    return what + "; nothing lost)"
