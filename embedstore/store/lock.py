"""One writer at a time per store: an advisory lock file in the sidecar folder.

flock belongs to the open file, which fork() shares: a decode worker forked by the writer (a
DataLoader worker) would keep the store locked after the writer died. Every child closes the lock
files it inherited as it starts (os.register_at_fork), so the lock dies with the writer, at once."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ..errors import StoreError, StoreLockedError

_HELD: set[int] = set()  # lock fds this process holds


def _close_inherited() -> None:
    for fd in list(_HELD):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


os.register_at_fork(after_in_child=_close_inherited)


class StoreLock:
    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def acquire(self, blocking: bool = False) -> bool:
        from ..atomic import disk_error

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise (disk_error(e, self.path) or StoreError(f"cannot open the lock file {self.path}: {e.strerror or e}")) from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        _HELD.add(fd)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
        except OSError:
            pass  # the pid is a courtesy for the "being written by" message
        self._fd = fd
        return True

    def acquire_or_raise(self, store: Path) -> None:
        if not self.acquire():
            try:
                pid = self.path.read_text().strip() or "?"
            except OSError:
                pid = "?"
            raise StoreLockedError(f"store {store} is being written by another process (pid {pid}); wait for it to finish or stop it")

    def release(self) -> None:
        if self._fd is not None:
            _HELD.discard(self._fd)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None
