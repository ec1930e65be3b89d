"""Interaction files for `embed recommend`: who liked what, as a CSV or Parquet table with columns
user, item and optionally rating and timestamp (numbers, or ISO dates such as 2024-05-01T12:00).

A row with an empty item names a user who has no interactions yet. Everything is returned as
compact arrays (one entry per row), so the recommender can group by user without Python objects
per row."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import SourceError

REQUIRED = ("user", "item")


@dataclass
class Interactions:
    users: np.ndarray  # str per row
    items: np.ndarray  # str per row ("" for a user with no interactions)
    ratings: np.ndarray | None  # float per row (NaN: none), or None without a rating column
    timestamps: np.ndarray | None  # float seconds per row, or None without a timestamp column
    path: str = ""

    def __len__(self) -> int:
        return len(self.users)


def _table(path: Path):
    import pyarrow as pa

    try:
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            t = pq.read_table(path)
        else:
            import pyarrow.csv as pcsv

            t = pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(strings_can_be_null=False,
                                                                          column_types={c: pa.string() for c in REQUIRED}))
    except (OSError, pa.ArrowInvalid) as e:
        raise SourceError(f"interactions file {path} cannot be read: {str(e).splitlines()[0][:200]}") from None
    return t


def _times(col, path: Path) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
        return col.to_numpy(zero_copy_only=False).astype(np.float64)
    if pa.types.is_timestamp(col.type) or pa.types.is_date(col.type):
        return pc.cast(pc.cast(col, pa.timestamp("s")), pa.int64()).to_numpy(zero_copy_only=False).astype(np.float64)
    vals = col.to_numpy(zero_copy_only=False).astype(str)
    try:
        return vals.astype(np.float64)
    except ValueError:
        pass
    try:
        return np.array(vals, dtype="datetime64[s]").astype(np.int64).astype(np.float64)
    except ValueError:
        bad = next((v for v in vals if not _is_time(v)), vals[0])
        raise SourceError(f"interactions file {path}: timestamp {bad!r} is neither a number nor an ISO date "
                          "(2024-05-01 or 2024-05-01T12:00:00)") from None


def _is_time(v: str) -> bool:
    try:
        np.datetime64(v)
        return True
    except ValueError:
        return False


def read_interactions(path: str | Path) -> Interactions:
    """Read an interactions table (.csv or .parquet) with user and item columns."""
    path = Path(path)
    if path.suffix.lower() not in (".csv", ".parquet"):
        raise SourceError(f"interactions file {path}: give a .csv or .parquet table with user,item[,rating,timestamp] columns")
    if not path.is_file():
        raise SourceError(f"interactions file {path} does not exist")
    t = _table(path)
    names = [c.strip().lower() for c in t.column_names]
    t = t.rename_columns(names)
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise SourceError(f"interactions file {path} has columns {', '.join(names) or '(none)'}; it needs user and item "
                          "(and optionally rating, timestamp)")

    def strings(c):
        return np.char.strip(t.column(c).to_numpy(zero_copy_only=False).astype(str))

    users, items = strings("user"), strings("item")
    if (users == "").any():
        row = int(np.flatnonzero(users == "")[0]) + 2
        raise SourceError(f"interactions file {path}: row {row} has no user")
    ratings = None
    if "rating" in names:
        try:
            ratings = np.array([np.nan if v in ("", "None", "nan") else float(v) for v in
                                t.column("rating").to_numpy(zero_copy_only=False).astype(str)], dtype=np.float64)
        except ValueError as e:
            raise SourceError(f"interactions file {path}: a rating is not a number ({e})") from None
    times = _times(t.column("timestamp"), path) if "timestamp" in names else None
    if times is not None and np.isnan(times[items != ""]).any():
        raise SourceError(f"interactions file {path}: some rows have no timestamp; give one on every row or drop the column")
    return Interactions(users, items, ratings, times, str(path))
