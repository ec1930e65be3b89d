"""The item record every source yields."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import quote_from_bytes, unquote_to_bytes

# Folder names read as a split, case-insensitive, by the rank they sort in (train, val, test): the one
# list, which the heads' split reader (heads/splits.py) takes too. *_set is Kaggle's naming
# (training_set/test_set): read as class labels, it gave two "classes" without a word.
SPLIT_NAMES = {"train": 0, "training": 0, "train_set": 0, "training_set": 0,
               "val": 1, "valid": 1, "validation": 1, "dev": 1, "val_set": 1, "valid_set": 1, "validation_set": 1,
               "test": 2, "testing": 2, "holdout": 2, "test_set": 2, "testing_set": 2}


def is_split_name(name: str) -> bool:
    return name.lower() in SPLIT_NAMES


def in_split(splits, name: str):
    """Mask of `splits` (an array of stored split names) that are the split `name`: the same name, or
    another name for the same split (`--split val` finds a store's valid/ folder, `test` its testing/)."""
    import numpy as np

    splits = np.asarray(splits)
    rank = SPLIT_NAMES.get(name.lower())
    if rank is None:
        return splits == name
    return np.isin(splits, [s for s in np.unique(splits) if SPLIT_NAMES.get(str(s).lower()) == rank])


# File names are bytes on POSIX. Python reads undecodable bytes as lone surrogates, which UTF-8 (and
# so HDF5) cannot hold. Such a path is kept as an RFC 8089 file URI, "file://" + percent-escaped
# bytes: lossless, and never confused with a plain path (those start with "/" or a name). Ids and
# labels made from such names are shown escaped ("caf\xe9.jpg"): readable keys, not paths.
FILE_URI = "file://"


def stored_uri(path: str) -> str:
    """The form a path is kept in: itself when it is valid UTF-8, else a percent-escaped file URI."""
    if not _needs_escape(path):
        return path
    return FILE_URI + quote_from_bytes(os.fsencode(path), safe="/")


def local_path(uri: str) -> str:
    """The path to open for a stored uri (undoes `stored_uri`)."""
    if uri.startswith(FILE_URI):
        return os.fsdecode(unquote_to_bytes(uri[len(FILE_URI):]))
    return uri


def shown(name: str) -> str:
    """A name with undecodable bytes shown as \\xNN (valid UTF-8, for ids, labels and messages)."""
    if not _needs_escape(name):
        return name
    try:
        return os.fsencode(name).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that stands for no byte (e.g. "\ud800" from JSON): \uXXXX
        return "".join(c if not 0xD800 <= ord(c) <= 0xDFFF else (
            os.fsencode(c).decode("utf-8", "backslashreplace") if 0xDC80 <= ord(c) <= 0xDCFF else f"\\u{ord(c):04x}")
            for c in name)


def _needs_escape(s: str) -> bool:
    try:
        s.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


@dataclass(frozen=True, slots=True)  # slots: one per source row, held through the build (~100 B a row less)
class Item:
    """One input: a stable id, the file it lives in, and optional label and split."""

    id: str
    uri: str
    label: str | None = None
    split: str | None = None
    text: str | None = None  # text items: the text itself (uri says where it came from)
    problem: str | None = None  # why the item cannot be used (quarantined by the build, with this reason)
    meta: str | None = None  # a manifest's other columns, as canonical JSON (`metadata_json`); --where filters on them


@dataclass
class Source:
    """A listed source: its items plus what was left out and why (said in the build summary)."""

    path: str
    kind: str
    items: "ItemTable"  # a list of Items is turned into one (sources/table.py: column-wise, ~1/5 the memory)
    skipped: dict[str, list[str]] = field(default_factory=dict)  # reason -> example paths
    has_labels: bool = False
    has_splits: bool = False
    # whether the source speaks about item metadata (a manifest or table with other columns); when it
    # does not (a folder, a plain manifest), a rebuild keeps what the store holds instead of erasing it
    has_metadata: bool = False
    layout: str = ""  # how it was read: classes | splits | flat (folders), manifest, text
    layout_from: str = ""  # what decided the layout, e.g. "folder names (--layout auto)"

    def __post_init__(self):
        from .table import ItemTable

        if not isinstance(self.items, ItemTable):
            self.items = ItemTable(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def describe_layout(self) -> dict:
        """The layout and what it found: items per split and per label (in the build summary)."""
        from collections import Counter

        splits = Counter(v for v in self.items.column("split") if v)
        labels = Counter(v for v in self.items.column("label") if v)
        splits = dict(sorted(splits.items(), key=lambda kv: (SPLIT_NAMES.get(kv[0].lower(), 3), kv[0])))
        return {"layout": self.layout, "from": self.layout_from, "split_counts": splits,
                "label_counts": dict(sorted(labels.items())),
                "metadata_columns": metadata_keys(self.items.column("meta"))}


def row_problem(row: dict, keep_bytes: tuple[str, ...] = ()) -> str | None:
    """Why a table row (a manifest's, a text table's) cannot be used as it is: a NUL byte (HDF5
    strings end at one), or undecodable bytes (read as lone surrogates) outside `keep_bytes`
    (an image manifest's 'path' names a file by its bytes). Such rows are quarantined with it."""
    for k, v in row.items():
        if v is None:
            continue
        v = str(v)
        if "\0" in v:
            return f"NUL byte in column '{k}'"
        if k not in keep_bytes:
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return f"column '{k}' is not valid UTF-8 ({shown(v)})"
    return None


def metadata_json(row: dict, own: tuple[str, ...]) -> str | None:
    """A manifest row's other columns (those not in `own`: path/text, label, split, id) as canonical
    JSON of strings, empty cells left out; None when there are none. Stored with the item, so
    `--where brand=acme` selects on them and exports carry them."""
    meta = {str(k).strip(): v for k, v in row.items() if k is not None and k not in own and not k.startswith("__")}
    return metadata_string(meta)


def metadata_string(meta: dict) -> str | None:
    """Item metadata in the one form the store keeps and compares: canonical JSON of strings (keys
    sorted, no spaces, keys and values in Unicode NFC form as `--where` reads them), None when
    empty. Typed values (Parquet) become the text a person would write: true / false, a float32's
    shortest digits (0.1, not 0.10000000149011612), lists and maps as JSON; null and NaN are no value."""
    import json
    import unicodedata

    clean = {}
    for k, v in meta.items():
        v = _metadata_text(v)
        if v is not None and v != "":
            clean[unicodedata.normalize("NFC", str(k).strip())] = unicodedata.normalize("NFC", v)
    return json.dumps(clean, sort_keys=True, ensure_ascii=False, separators=(",", ":")) if clean else None


def metadata_keys(metas) -> list[str]:
    """The metadata columns any of `metas` (canonical-JSON strings or UTF-8 bytes; empty or None for
    none) has: one parse per distinct string."""
    import json

    distinct = {m.decode("utf-8") if isinstance(m, bytes) else m for m in metas}
    return sorted({k for m in distinct if m for k in json.loads(m)})


def _metadata_text(v) -> str | None:
    import json
    import math

    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if math.isnan(v):
            return None
        import numpy as np

        f32 = np.float32(v)  # a float32 column arrives as the float64 nearest it: keep its own shortest digits
        return str(f32) if math.isfinite(v) and float(f32) == v and len(str(f32)) < len(repr(v)) else repr(v)
    if isinstance(v, bytes):
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError:
            return v.hex()
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(v, ensure_ascii=False, sort_keys=True, default=str)
    return str(v).strip()


def modified_time(uri: str) -> float | None:
    """When a stored item's file was last modified, or None when it is gone (the audit keeps the
    oldest of a cluster of copies: an original usually predates its copies)."""
    try:
        return os.stat(local_path(uri)).st_mtime
    except (OSError, ValueError):
        return None
