"""Streaming tables for batch results: CSV or Parquet by the file's suffix, written under a
temporary name and renamed into place when complete (atomic.atomic_path)."""

from __future__ import annotations

from pathlib import Path

from ..errors import OptionError

SUFFIXES = (".csv", ".parquet")


def check_table_path(path: str | Path) -> Path:
    p = Path(path)
    if p.suffix.lower() not in SUFFIXES:
        raise OptionError(f"--out {p}: write a .csv or a .parquet file")
    if p.is_dir():
        raise OptionError(f"--out {p} is a folder; give a file name ending in .csv or .parquet")
    return p


class TableWriter:
    """`with TableWriter(path, columns) as w: w.write(rows)` where rows is a dict of equal-length columns."""

    def __init__(self, path: str | Path, columns: list[str]):
        self.path = check_table_path(path)
        self.columns = columns
        self.rows = 0

    def __enter__(self) -> "TableWriter":
        from ..atomic import atomic_path

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._ctx = atomic_path(self.path)
        self._tmp = self._ctx.__enter__()
        if self.path.suffix.lower() == ".csv":
            import csv

            try:
                self._f = open(self._tmp, "w", newline="", encoding="utf-8")
            except BaseException as e:  # e.g. a read-only folder: the writer's own error, said in one line
                self._ctx.__exit__(type(e), e, e.__traceback__)
                raise
            self._csv = csv.writer(self._f)
            self._csv.writerow(self.columns)
        else:
            self._pq = None
        return self

    def write(self, cols: dict) -> None:
        n = len(cols[self.columns[0]])
        if self.path.suffix.lower() == ".csv":
            self._csv.writerows(zip(*(cols[c] for c in self.columns)))
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            t = pa.table({c: cols[c] for c in self.columns})
            if self._pq is None:
                self._pq = pq.ParquetWriter(self._tmp, t.schema)
            self._pq.write_table(t.cast(self._pq.schema))
        self.rows += n

    def __exit__(self, *exc):
        if self.path.suffix.lower() == ".csv":
            self._f.close()
        elif self._pq is not None:
            self._pq.close()
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.table({c: [] for c in self.columns}), self._tmp)
        return self._ctx.__exit__(*exc)
