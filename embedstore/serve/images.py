"""Image decoding for the server with bounded memory, whatever is asked.

Every decode first reads the image header (no pixels) and reserves the bytes its pixels will take
from one shared budget (`DecodeBudget`); a decode that would not fit waits until others release
theirs. An image larger than the whole budget is refused. JPEG thumbnails decode at a reduced
scale (PIL's `draft`, DCT scaling), so a huge JPEG costs little; other formats are decoded whole
and then reduced, which is what the budget is for. Finished thumbnails are kept in a small cache,
so eight requests for one huge image decode it once."""

from __future__ import annotations

import io
import threading
from collections import OrderedDict

from PIL import Image

from ..sources.images import DecodeError, thumbnail

BYTES_PER_PIXEL = 4  # PIL holds RGB, RGBA and P images in 4-byte pixels
DEFAULT_BUDGET = 384 * 2**20  # one 9000 x 9000 photo (324 MB in PIL) at a time
CACHE_BYTES = 32 * 2**20


def return_freed_memory_to_the_system() -> None:
    """glibc only: allocations of 4 MB and more get their own mmap, so a freed image goes back to the
    system at once. Without this glibc raises its mmap threshold after the first big free and
    keeps later images in per-thread heaps: eight thumbnails of one 9000 x 9000 PNG, decoded one
    after another, left the process at 2.2 GB."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        M_MMAP_THRESHOLD = -3
        libc.mallopt(M_MMAP_THRESHOLD, 4 * 2**20)
    except (OSError, AttributeError):  # not glibc (musl): nothing to tune
        pass


class ImageRefused(Exception):
    """An image the server will not decode (too large, unreadable); the message says why."""


class DecodeBudget:
    """A counting semaphore in bytes: `with budget.hold(n):` waits until n bytes are free."""

    def __init__(self, total: int = DEFAULT_BUDGET):
        self.total, self.used = total, 0
        self._cv = threading.Condition()

    def hold(self, n: int, what: str = "the image"):
        if n > self.total:
            raise ImageRefused(f"{what} needs {n / 2**20:.0f} MB to decode; this server decodes at most "
                               f"{self.total / 2**20:.0f} MB of pixels at a time")
        budget = self

        class _Held:
            def __enter__(self):
                with budget._cv:
                    budget._cv.wait_for(lambda: budget.used + n <= budget.total)
                    budget.used += n

            def __exit__(self, *exc):
                with budget._cv:
                    budget.used -= n
                    budget._cv.notify_all()

        return _Held()


def decode_cost(size: tuple[int, int], draft_to: int | None = None, is_jpeg: bool = False) -> int:
    """Bytes the decoded pixels take; JPEGs drafted to `draft_to` decode at up to 1/8 scale."""
    w, h = size
    if is_jpeg and draft_to:
        scale = 1
        while scale < 8 and min(w // (scale * 2), h // (scale * 2)) >= draft_to:
            scale *= 2
        w, h = -(-w // scale), -(-h // scale)
    return w * h * BYTES_PER_PIXEL


class Thumbnailer:
    """PNG thumbnails of the store's files, decoded within a `DecodeBudget`, cached by (row, size)."""

    def __init__(self, budget: DecodeBudget, cache_bytes: int = CACHE_BYTES):
        self.budget, self.cache_bytes = budget, cache_bytes
        self._cache: OrderedDict = OrderedDict()
        self._cached = 0
        self._lock = threading.Lock()
        self._key_locks: dict = {}

    def png(self, path: str, key, size: int) -> bytes:
        k = (key, size)
        with self._lock:
            if k in self._cache:
                self._cache.move_to_end(k)
                return self._cache[k]
            key_lock = self._key_locks.setdefault(k, threading.Lock())
        with key_lock:  # concurrent requests for one thumbnail decode it once
            with self._lock:
                if k in self._cache:
                    return self._cache[k]
            try:
                data = self._make(path, size)
            finally:
                with self._lock:
                    self._key_locks.pop(k, None)
            with self._lock:
                self._cache[k] = data
                self._cached += len(data)
                while self._cached > self.cache_bytes and self._cache:
                    _, old = self._cache.popitem(last=False)
                    self._cached -= len(old)
        return data

    def _make(self, path: str, size: int) -> bytes:
        try:
            with Image.open(path) as im:
                is_jpeg = im.format == "JPEG"
                with self.budget.hold(decode_cost(im.size, size, is_jpeg), "this item's image"):
                    if is_jpeg:
                        im.draft("RGB", (size, size))
                    im.load()
                    im = thumbnail(im, size, reducing_gap=2.0)  # upright by its EXIF orientation; 16-bit greyscale as the encoder saw it
                    buf = io.BytesIO()
                    im.save(buf, format="PNG")
                    return buf.getvalue()
        except ImageRefused:
            raise
        except DecodeError as e:
            raise ImageRefused(f"the item's file cannot be read as an image any more ({e})") from None
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise ImageRefused(f"the item's file cannot be read as an image any more ({type(e).__name__})") from None


def check_upload(data: bytes, budget: DecodeBudget, max_pixels: int):
    """Header-only check of an uploaded image; returns the budget hold to decode it under.
    The upload is decoded at full size afterwards (as the build decoded the store's files), so it
    must fit both `max_pixels` and the budget."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
    except Image.DecompressionBombError as e:
        raise ImageRefused(f"the uploaded image is too large: {e}") from None
    except (OSError, ValueError, SyntaxError):
        return budget.hold(0)  # not an image: the embedding service says why
    if w * h > max_pixels:
        raise ImageRefused(f"the uploaded image has {w}x{h} pixels; this server accepts at most {max_pixels / 1e6:.0f} megapixels")
    # decode + RGB conversion + EXIF transpose can hold two copies at once
    return budget.hold(2 * w * h * BYTES_PER_PIXEL, "the uploaded image")
