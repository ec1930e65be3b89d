"""Filling a large IVF index on a Ray cluster: each task adds a piece of the set's rows (read
from the shard files) to an empty copy of the trained index; the driver merges the lists."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class ParallelAdd:
    """Fills a trained IVF index from shard pieces in parallel Ray tasks, then merges the lists."""

    def __init__(self, tasks: int, piece_bytes: int = 256 << 20):
        self.tasks, self.piece_bytes = tasks, piece_bytes

    def add(self, index, shard_root: Path, runs, unit: bool = False):
        import faiss
        import ray

        empty = faiss.clone_index(index)
        empty.reset()
        blob = ray.put(faiss.serialize_index(empty))
        total = sum(b - a for _s, a, b, _r in runs)
        piece_rows = max(1, min(-(-total // self.tasks), self.piece_bytes // (4 * index.d)))
        task = ray.remote(num_cpus=1)(_add_piece)
        refs = [task.remote(blob, str(shard_root), piece, unit) for piece in _pieces(runs, piece_rows)]
        ivf = faiss.extract_index_ivf(index)
        for ref in refs:  # merged in order as each finishes its turn; ids are set rows, so order is free
            sub = faiss.deserialize_index(ray.get(ref))
            ivf.merge_from(faiss.extract_index_ivf(sub), 0)
        return index


def _pieces(runs, piece_rows: int) -> list[list]:
    out, cur, cur_n = [], [], 0
    for shard, a, b, row in runs:
        while a < b:
            take = min(b - a, piece_rows - cur_n)
            cur.append((shard, a, a + take, row))
            a, row, cur_n = a + take, row + take, cur_n + take
            if cur_n == piece_rows:
                out.append(cur)
                cur, cur_n = [], 0
    if cur:
        out.append(cur)
    return out


def _add_piece(blob, shard_root: str, runs, unit: bool = False) -> np.ndarray:
    import faiss

    from ..store.rows import read_runs

    faiss.omp_set_num_threads(1)  # one core per task; the cluster runs many
    index = faiss.deserialize_index(blob)
    for run in runs:
        row = run[3]
        for chunk in read_runs(Path(shard_root), [run], unit=unit):
            index.add_with_ids(np.ascontiguousarray(chunk), np.arange(row, row + len(chunk), dtype=np.int64))
            row += len(chunk)
    return faiss.serialize_index(index)
