"""`embed info`'s facts about a store, read through the Store."""

from __future__ import annotations

from .provenance import _decode_attrs
from .select import metadata_keys
from .schema import STATUS_OK


def store_info(self) -> dict:
    from .index import BEFORE_UNIT_ROWS, before_unit_rows, index_paths, read_index_meta
    from .integrity import index_problem

    items = self.items()
    status = items["status"]
    labels = items["label"]
    quarantined = [
        {"id": i, "uri": u, "reason": r}
        for i, u, s, r in zip(items["id"], items["uri"], status, items["reason"])
        if s != STATUS_OK
    ]
    label_counts: dict[str, int] = {}
    for lab, s in zip(labels, status):
        if s == STATUS_OK and lab:
            label_counts[lab] = label_counts.get(lab, 0) + 1
    split_counts: dict[str, int] = {}
    split_label: dict[str, dict[str, int]] = {}  # split -> label -> ok items; "" for none
    for sp, lab, s in zip(items["split"], labels, status):
        if s == STATUS_OK and sp:
            split_counts[sp] = split_counts.get(sp, 0) + 1
        if s == STATUS_OK:
            row = split_label.setdefault(sp or "", {})
            row[lab or ""] = row.get(lab or "", 0) + 1
    sets = []
    for vs in self.vector_sets():
        idx = dict(vs.index)
        idx.pop("ids_sha256", None)
        if idx:
            idx["up_to_date"] = idx.get("ntotal") == vs.count
            # size and mtime against what was recorded (the file re-hashed only when they differ): a
            # damaged index is said here, not only by `embed verify`; searches scan exactly meanwhile
            idx["problem"] = index_problem(index_paths(self.sidecar, vs.name)[0], vs.index) or (
                BEFORE_UNIT_ROWS if before_unit_rows(read_index_meta(self.sidecar, vs.name),
                                                     vs.provenance.get("dtype") == "float16") else None)
        prov = {k: v for k, v in vs.attrs.items() if not k.startswith("index_") and k not in ("count", "stale_rows")}
        sets.append({"name": vs.name, "count": vs.count, "stale_rows": vs.stale_rows, "provenance": prov, "index": idx})
    from .segments import parts_of

    with self._file() as f:
        a = _decode_attrs(f.attrs)
        parts = parts_of(f)  # a catalog head's files (store/segments.py); none for a catalog written whole
    return {
        "store": str(self.path),
        "schema": a.get("embedstore_schema"),
        "created": a.get("created"),
        "updated": a.get("updated"),
        "catalog_parts": len(parts),
        "items": int(len(status)),
        "ok": int((status == STATUS_OK).sum()),
        "quarantined": len(quarantined),
        "labels": dict(sorted(label_counts.items())),
        "unlabelled": int((status == STATUS_OK).sum()) - sum(label_counts.values()),  # ok items without a label
        "splits": dict(sorted(split_counts.items())),
        "split_label_counts": {sp: dict(sorted(row.items())) for sp, row in sorted(split_label.items())},
        "metadata_columns": metadata_keys(items["meta"]) if any(items["meta"]) else [],  # --where keys beyond the built-in ones
        "vector_sets": sets,
        "quarantined_items": quarantined,
    }
