"""Schema 1 -> 2: each vector set in the catalog gains `item_row` (its rows' positions in the item
table), `row_sha256` (a checksum per block of its row-aligned metadata) and `row_map_sha256` (a
checksum of its virtual dataset's row-to-shard map). They let a reader stream rows with their
labels in flat memory, and check the map and metadata it reads. Shards are unchanged; all three
are derived from them, so the upgrade rewrites the catalog from the shards, and says whether any
item or row differs from what the schema 1 catalog listed."""

from __future__ import annotations

FROM, TO = 1, 2


def _listed(path) -> tuple[set, dict]:
    import h5py

    with h5py.File(path, "r") as f:
        items = set(f["items/id"].asstr()[()]) if "items" in f else set()
        rows = {name: len(g["ids"]) for name, g in f["vectors"].items()} if "vectors" in f else {}
    return items, rows


def upgrade(store) -> str:
    before_items, before_rows = _listed(store.path)
    store.refresh(index=False)
    after_items, after_rows = _listed(store.path)
    lost = before_items - after_items
    what = (f"upgraded the catalog {store.path.name} from schema {FROM} to {TO} "
            f"({len(after_items)} items, {sum(after_rows.values())} rows")
    if lost or any(after_rows.get(k, 0) < n for k, n in before_rows.items()):
        return what + f"; {len(lost)} item(s) it listed are not in the shards: {', '.join(sorted(lost)[:3])})"
    return what + "; nothing lost)"
