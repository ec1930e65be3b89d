"""How every output file gets written, and when an existing output may be replaced.

Writing: a temporary name in the same folder (`.tmp-<pid>-<token>-<name>`, so it keeps its suffix and
sweeps can tell a dead writer's leftovers by the pid), fsync, os.replace into place, fsync the folder.
A reader sees the old file or the new one, never half of one; on an exception the temporary is removed.

Replacing: `check_replace` is the one --force rule for the folders we write (heads, detectors,
fine-tune runs): an existing path needs --force, and even then only something we wrote is replaced.
`check_output_folder` is the one check of the other folders an option names (reports, plots, exports):
a file there, or a folder that cannot be written, is refused before any work.

`EMBEDSTORE_FAULT=<point>` kills the process with SIGKILL at a named point (see `fault`): the tests use
it to check that a kill at any instant leaves a loadable result.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import secrets
import shutil
import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

TMP_PREFIX = ".tmp-"


def fault(point: str) -> None:
    """SIGKILL this process when EMBEDSTORE_FAULT names `point` (a test hook; costs one getenv)."""
    if os.environ.get("EMBEDSTORE_FAULT") == point:
        os.kill(os.getpid(), signal.SIGKILL)


def temp_path(path: str | Path) -> Path:
    """A fresh temporary name beside `path` that keeps its suffix and carries this process's pid."""
    path = Path(path)
    return path.with_name(f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{path.name}")


def fsync_dir(path: str | Path) -> None:
    """Make a rename or unlink in folder `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    if path.is_dir():
        for p in path.iterdir():
            _fsync_tree(p)
        fsync_dir(path)
    else:
        with open(path, "rb+") as fh:
            os.fsync(fh.fileno())


def _remove(path: Path) -> None:
    """Best effort: on a read-only disk even unlinking a name that was never made fails (EROFS), and
    that must not hide the error that brought us here."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` for the caller to write (a file, or a folder it creates);
    when the block ends, fsync it, rename it to `path` and fsync the folder. If the block raises, the
    temporary is removed and `path` is untouched. A folder can only take the place of a missing one.

        with atomic_path(out) as tmp: ...   (an HDF5 file: atomic_h5 below)
    """
    path = Path(path)
    tmp = temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)  # as every output path is taken: its folder is made
    except OSError as e:
        raise (disk_error(e, path, store=False) or _cannot_write(e, path)) from None
    try:
        yield tmp
        _fsync_tree(tmp)
        fault(f"written:{path.name}")
        os.replace(tmp, path)
    except BaseException as e:
        _remove(tmp)
        disk = disk_error(e, path, store=False)
        if disk is not None:
            raise disk from e
        if isinstance(e, OSError) and str(getattr(e, "filename", "") or "").startswith(str(tmp)):
            raise _cannot_write(e, path) from e  # the temporary itself could not be made (e.g. under /proc)
        raise
    fault(f"renamed:{path.name}")
    fsync_dir(path.parent)


@contextmanager
def atomic_h5(path: str | Path):
    """`atomic_path` for one HDF5 file: yield an h5py.File written on the temporary, closed (and
    renamed into place) when the block ends.

    HDF5 must never see a write fail: a file whose write failed cannot flush its metadata, and
    whatever closes it then (the garbage collector, on any thread, or interpreter exit) crashes the
    process in H5F_close (h5py#914, a bug in the HDF5 library; a disk that fills after
    `check_free_space` did it, and so did a Ctrl-C landing in a write). So HDF5 writes through
    `_Writes`, which keeps the first error (and a Ctrl-C) and drops what follows; the file then
    closes cleanly, and the error is raised after it (a disk error becomes atomic_path's one-line
    StoreError), also when HDF5 raised something of its own meanwhile, with the temporary removed."""
    import h5py

    with atomic_path(path) as tmp:
        raw = _Writes(tmp)
        try:
            try:
                with _sigint_outside(raw), h5py.File(raw, "w") as f:
                    yield f
            finally:
                raw.close()
        except BaseException as e:
            if raw.error is not None and raw.error is not e:  # e.g. HDF5 reading back bytes that were dropped
                raise raw.error from e
            raise
        if raw.error is not None:
            raise raw.error
        if raw.interrupt is not None:  # a Ctrl-C met in a write, raised now that the file is closed
            raise raw.interrupt


@contextmanager
def _sigint_outside(raw: "_Writes"):
    """A Ctrl-C that lands in one of `raw`'s methods (HDF5 calling back into Python) is kept for
    later, because there HDF5 would take it for a failed write; anywhere else it is raised at once.
    Python checks for signals on entering a function, before `_Writes._calm` can catch anything, so
    this is decided by the interrupted frame. Only in the main thread, with Python's own handler."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return

    def on_sigint(signum, frame):
        if frame is not None and frame.f_code in _WRITES_CODE:
            raw.interrupt = raw.interrupt or KeyboardInterrupt()
            return
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


class _Writes(io.RawIOBase):
    """The file object HDF5 writes a new file through (h5py's fileobj driver: a 150 MB file of
    strings, integers and chunked vectors took 0.79-1.03 s through atomic_h5, fsync and rename
    included, against 0.84-0.95 s with HDF5's own driver, 2 cores). The first OSError of a write is kept in `error`
    and every write from then on is dropped while HDF5 is told it succeeded; reads past what was
    written read zeros. Unbuffered, by offset (pwrite/pread): HDF5 gathers its own writes (1,611
    calls for 150 MB), and each call can be run again with the same effect, so a Ctrl-C (or
    SystemExit) raised inside one is kept in `interrupt` and the call completed, rather than
    reaching HDF5 as a failed write."""

    def __init__(self, path: Path):
        self.error: OSError | None = None
        self.interrupt: BaseException | None = None
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o644)
        self._pos = 0

    def _calm(self, op, *args):
        while True:
            try:
                return op(*args)
            except (KeyboardInterrupt, SystemExit) as e:
                self.interrupt = self.interrupt or e

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._calm(self._seek, offset, whence)

    def _seek(self, offset: int, whence: int) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: os.fstat(self._fd).st_size}[whence]
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, b) -> int:
        return self._calm(self._readinto, b)

    def _readinto(self, b) -> int:
        view = memoryview(b).cast("B")
        data = os.pread(self._fd, len(view), self._pos)
        n = len(data)
        view[:n] = data
        if n < len(view) and self.error is not None:  # what was dropped: HDF5 only needs consistent bytes
            view[n:] = bytes(len(view) - n)
            n = len(view)
        self._pos += n
        return n

    def write(self, b) -> int:
        return self._calm(self._write, b)

    def _write(self, b) -> int:
        view = memoryview(b).cast("B")
        n, done = len(view), 0
        while self.error is None and done < n:
            try:
                wrote = os.pwrite(self._fd, view[done:], self._pos + done)
            except OSError as e:
                self.error = e
                break
            if not wrote:
                self.error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            done += wrote
        self._pos += n
        return n

    def truncate(self, size: int | None = None) -> int:
        return self._calm(self._truncate, self._pos if size is None else size)

    def _truncate(self, size: int) -> int:
        try:
            os.ftruncate(self._fd, size)
        except OSError as e:
            self.error = self.error or e
        return size

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)
        super().close()


_WRITES_CODE = frozenset(f.__code__ for f in vars(_Writes).values() if callable(f) and hasattr(f, "__code__"))


def _cannot_write(e: OSError, path: Path):
    from .errors import StoreError

    return StoreError(f"cannot write {path}: {e.strerror or type(e).__name__}; choose another path for the output")


_DISK_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
                errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
                errno.EPERM: "permission denied"}
_DISK_TEXT = {"no space left": errno.ENOSPC, "errno = 28": errno.ENOSPC, "quota exceeded": errno.EDQUOT,
              "read-only file system": errno.EROFS, "errno = 30": errno.EROFS, "permission denied": errno.EACCES}


def disk_error(e: BaseException, path: str | os.PathLike, store: bool = True):
    """A one-line StoreError for a full, read-only or forbidden disk (OSError with that errno, or
    HDF5's wording of one: h5py raises a RuntimeError when a flush fails half way, "errno = 28");
    None for any other error. It names the path and the fix (`store`: for a store's own files, else
    for an output such as --out)."""
    from .errors import StoreError

    if isinstance(e, StoreError) or not isinstance(e, (OSError, RuntimeError)):
        return None
    own = getattr(e, "errno", None)
    code = own if own in _DISK_ERRNOS else next((c for t, c in _DISK_TEXT.items() if t in str(e).lower()), None)
    if code is None:
        return None
    where = "a store" if store else "the output"
    fix = {errno.ENOSPC: f"free some space there (or put {where} on another disk)",
           errno.EDQUOT: "free some space within your quota", errno.EROFS: f"remount it read-write or put {where} on a writable disk",
           }.get(code, f"fix the folder's permissions or put {where} in a folder you can write")
    return StoreError(f"cannot write {path}: {_DISK_ERRNOS[code]}; {fix}, then re-run the same command"
                      + (" (what the store already holds is kept)" if store else ""))


def check_free_space(directory: str | os.PathLike, need: int) -> None:
    """Refuse, before writing, a write of about `need` bytes that would fill the disk: HDF5 can crash
    the process when a write fails half way, so running out of space is caught ahead of it."""
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        return
    if free < need + (1 << 16):
        raise disk_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), directory)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | Path, obj, **dump_kw) -> Path:
    """json.dumps(obj, **dump_kw), written atomically."""
    return write_text_atomic(path, json.dumps(obj, **dump_kw))


def remove_stale_temps(directory: str | Path, name: str | None = None) -> int:
    """Delete temporaries in `directory` left by writers that are no longer running; return how many.
    With `name`, only temporaries of that file (e.g. a store's catalog beside the user's own files)."""
    directory = Path(directory)
    if not directory.is_dir():
        return 0
    removed = 0
    for n in os.listdir(directory):
        if not n.startswith(TMP_PREFIX) or (name is not None and not n.endswith(f"-{name}")):
            continue
        try:
            pid = int(n[len(TMP_PREFIX):].split("-", 1)[0])
        except ValueError:
            pid = -1
        if pid == os.getpid() or (pid > 0 and _alive(pid)):
            continue
        _remove(directory / n)
        removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_replace(path: str | Path, force: bool, what: str, error: type[Exception], markers: Sequence[str],
                  flag: str = "--force", otherwise: str = "choose another path") -> bool:
    """The one --force rule. A missing `path` is fine; an existing one needs `force`, and even then must
    be a folder holding one of `markers` (what we write there), so --force never replaces a folder we did
    not write. Raises `error` with a one-line reason; returns whether `path` exists. Call it before any
    heavy work, so a refusal costs nothing. Whether `path` is ours is asked first: the advice to pass
    `flag` is given only where `flag` would be obeyed."""
    path = Path(path)
    check_writable(path, error, otherwise)
    if not (path.exists() or path.is_symlink()):
        return False
    if not path.is_dir() or not any((path / m).exists() for m in markers):
        raise error(f"{path} already exists and is not a {what}, so it is never replaced (not even with {flag}); "
                    "choose another path")
    if not force:
        raise error(f"{path} already exists; pass {flag} to replace it, or {otherwise}")
    return True


def check_output_folder(path: str | Path, option: str, holds: str, error: type[Exception] | None = None,
                        fix: str = "give a new or empty folder") -> Path:
    """The one check of an option that names a folder to write into (--report, --plots, export's --out):
    before any work, refuse a path that is a file, lies under a file, or is in a folder that cannot be
    written. A missing folder is fine (the writer makes it). `holds`: what the folder gets, for the
    message; `error`: the exception raised (OptionError by default)."""
    from .errors import OptionError

    error = error or OptionError
    path = Path(path)
    if (path.exists() or path.is_symlink()) and not path.is_dir():
        raise error(f"{option} {path} is a file; {option} takes a folder ({holds}): {fix}")
    check_writable(path, error, fix)
    return path


def check_writable(path: Path, error: type[Exception], otherwise: str) -> None:
    """Refuse, before any work, an output whose folder (or the nearest one of its parents that
    exists) cannot be written: a read-only mount or a folder without write permission. Without this a
    head is fitted, or a fine-tune trained, before the write fails."""
    where = path if path.is_dir() else path.parent
    where = where.absolute()
    while not where.exists() and where != where.parent:
        where = where.parent
    if where.exists() and not where.is_dir():
        raise error(f"cannot write {path}: {where} is a file, not a folder; {otherwise}")
    if where.exists() and not os.access(where, os.W_OK | os.X_OK):
        why = "the file system is read-only" if _read_only_fs(where) else "permission denied"
        raise error(f"cannot write {path}: {why} ({where}); {otherwise}")


def _read_only_fs(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # no statvfs (Windows)
        return False


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, read in 1 MiB blocks (weights files, saved arrays)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
