"""The write stage: a background thread that commits shards, so encoding never waits on HDF5."""

from __future__ import annotations

import queue
import threading
import time

import numpy as np

from ..memory import release_freed_memory
from ..store import ItemRows, Store


class ShardWriter:
    """Accumulates rows and commits a shard every `shard_rows` rows or `commit_seconds`.

    `put` hands rows over and returns at once (unless the small queue is full); `close`
    commits what is pending, waits for the thread and re-raises any error it met.

    So that readers (search, serve, plain h5py) see progress during long builds, the catalog is
    brought up to date on a background thread; a commit never waits on it. With `append` (every id
    the build commits is new to the store) an update appends the rows since the last one
    (store/segments.py: its cost is those rows, not the store's), every `catalog_seconds`.
    Otherwise it rewrites the catalog whole (O(rows so far): at 2M rows ~25 s), every
    `catalog_seconds` or every 10x as long as the last rewrite took, whichever is longer.
    """

    def __init__(self, store: Store, set_name: str, set_attrs: dict, shard_attrs: dict, dim: int, dtype: str,
                 shard_rows: int = 4096, commit_seconds: float = 60.0, catalog_seconds: float = 30.0, append: bool = False):
        self.store, self.set_name, self.set_attrs, self.shard_attrs = store, set_name, set_attrs, shard_attrs
        self.dim, self.dtype = dim, np.dtype(dtype)
        self.shard_rows, self.commit_seconds, self.catalog_seconds = shard_rows, commit_seconds, catalog_seconds
        self.busy_seconds = 0.0
        self.shards = 0
        self.rows_committed = 0
        self.error: BaseException | None = None
        self._q: queue.Queue = queue.Queue(maxsize=8)
        self._reset()
        self._last_catalog = time.monotonic()
        self._catalog_interval = catalog_seconds
        self._catalog_thread: threading.Thread | None = None
        self.append = append
        self.catalog_refreshes = 0
        self.catalog_appends = 0  # of the refreshes, those that appended
        self.catalog_errors: list[str] = []  # why an update failed (the build's final refresh then does it)
        self.catalog_seconds_spent = 0.0
        self._thread = threading.Thread(target=self._run, name="embedstore-writer", daemon=True)
        self._thread.start()

    def _reset(self) -> None:
        self._items = ItemRows()
        self._vec_ids: list[str] = []
        self._vec_sha: list[str] = []
        self._vecs: list[np.ndarray] = []
        self._n_vecs = 0
        self._first_pending: float | None = None

    def put(self, rows: list[dict], vectors: np.ndarray | None = None, vector_rows: list[dict] | None = None) -> None:
        """Queue item rows; `vectors[k]` belongs to `vector_rows[k]` (a subset of `rows`)."""
        if self.error is not None:
            raise self.error
        self._q.put((rows, vectors, vector_rows))

    def put_copies(self, copies: list[tuple[dict, str]]) -> None:
        """Queue each (row, id) of `copies` with the vector the set holds for that id: one pass over
        the set's ids (a block in memory at a time) finds their rows, which are then read one by one.
        The vectors were made by this encoder from these same bytes (a file that moved, under a new
        id), so encoding them again would give them back, at the cost of decoding and a forward."""
        from ..errors import BuildError

        want: dict[str, list[int]] = {}
        for n, (_, i) in enumerate(copies):
            want.setdefault(i, []).append(n)
        rows = self.store.rows(self.set_name)
        at = np.full(len(copies), -1, dtype=np.int64)
        for start, _, meta in rows.stream(vectors=False, chunk_rows=1 << 16, columns=("id",), raw=True):
            for r, i in enumerate(meta["id"].strings()):
                for n in want.get(i, ()):
                    at[n] = start + r
        if (at < 0).any():  # the plan saw these ids in the set, and the build holds the store's lock
            raise BuildError(f"{int((at < 0).sum())} stored vector(s) to copy are no longer in the set "
                             f"(e.g. {copies[int(np.flatnonzero(at < 0)[0])][1]}); run the build again")
        for a in range(0, len(copies), 4096):
            part = [row for row, _ in copies[a : a + 4096]]
            self.put(part, rows.fetch(at[a : a + 4096]), part)

    def _run(self) -> None:
        try:
            while True:
                msg = self._q.get()
                if msg is None:
                    break
                t0 = time.perf_counter()
                self._add(*msg)
                if len(self._items) >= self.shard_rows or (
                    self._first_pending is not None and time.monotonic() - self._first_pending > self.commit_seconds
                ):
                    self._commit()
                self.busy_seconds += time.perf_counter() - t0
            t0 = time.perf_counter()
            self._commit()
            self.busy_seconds += time.perf_counter() - t0
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            self.error = e
            while True:  # drain so a blocked put() returns
                try:
                    if self._q.get_nowait() is None:
                        break
                except queue.Empty:
                    break

    def _add(self, rows, vectors, vector_rows) -> None:
        if self._first_pending is None:
            self._first_pending = time.monotonic()
        for r in rows:
            self._items.append(**r)
        if vectors is not None and len(vectors):
            self._vecs.append(np.asarray(vectors, dtype=self.dtype))
            self._vec_ids.extend(r["id"] for r in vector_rows)
            self._vec_sha.extend(r["sha256"] for r in vector_rows)
            self._n_vecs += len(vectors)

    def _commit(self) -> None:
        if not len(self._items):
            return
        vecs = np.concatenate(self._vecs) if self._vecs else np.zeros((0, self.dim), dtype=self.dtype)
        self.store.commit(self.set_name, self.set_attrs, self._items, self._vec_ids, self._vec_sha, vecs, self.shard_attrs)
        self.shards += 1
        self.rows_committed += len(self._items)
        self._reset()
        busy = self._catalog_thread is not None and self._catalog_thread.is_alive()
        if not busy and time.monotonic() - self._last_catalog > self._catalog_interval:
            self._catalog_thread = threading.Thread(target=self._refresh_catalog, name="embedstore-catalog", daemon=True)
            self._catalog_thread.start()

    def _refresh_catalog(self) -> None:
        t0 = time.monotonic()
        appended = False
        try:  # progress for readers only: a failure is noted, and the build's final refresh redoes it
            try:
                appended = self.append and self.store.append_catalog()
            except Exception as e:  # noqa: BLE001 - e.g. a damaged segment met by a merge: the whole catalog, below
                self._note_error(e)
            if appended:
                self.catalog_appends += 1
            else:
                self.store.refresh(index=False)
        except Exception as e:  # noqa: BLE001
            self._note_error(e)
        release_freed_memory()  # the refresh's transients (memory.py), while the build goes on
        took = time.monotonic() - t0
        self.catalog_refreshes += 1
        self.catalog_seconds_spent += took
        # an append costs the rows since the last update, whatever the cadence: keep it; a whole
        # rewrite costs the rows so far: space them so that rewriting stays ~10% of the build
        self._catalog_interval = self.catalog_seconds if appended else max(self.catalog_seconds, 10 * took)
        self._last_catalog = time.monotonic()

    def _note_error(self, e: BaseException) -> None:
        self.catalog_errors.append(f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")

    def close(self) -> None:
        if self._thread.is_alive():
            self._q.put(None)
            self._thread.join()
        if self._catalog_thread is not None:
            self._catalog_thread.join()  # the build's own refresh comes next; never two at once
        if self.error is not None:
            raise self.error
