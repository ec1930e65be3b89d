"""Handing freed memory back to the operating system.

glibc's malloc keeps freed memory inside its heap for reuse and returns only what lies at the top:
after a build frees its source listing (millions of small strings and Arrow buffers spread over
the heap) the process kept ~300 MB it no longer used, at 2M rows, and the final catalog refresh
and index build then came on top of it. `malloc_trim(0)` returns every free page of the heap.
Python has no interface to it, hence ctypes; elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to call
        return None


def release_freed_memory() -> bool:
    """Return the heap's free pages to the system; True when glibc did so."""
    trim = _trim()
    return bool(trim is not None and trim(0))
