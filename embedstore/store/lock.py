"""One writer at a time per store: an advisory lock file in the sidecar folder."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ..errors import StoreLockedError


class StoreLock:
    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def acquire(self, blocking: bool = False) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
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
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None
