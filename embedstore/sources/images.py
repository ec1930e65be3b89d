"""Reading and decoding one image file, with a reason when it cannot be used."""

from __future__ import annotations

import contextlib
import hashlib
import io
import warnings

from PIL import Image, ImageFile, ImageOps

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is quarantined, never half-decoded
MAX_PIXELS = 178_956_970  # PIL's default bomb limit; larger images are quarantined


class DecodeError(Exception):
    """Why a file could not be used; the message is the quarantine reason."""


def read_bytes(uri: str) -> bytes:
    from .items import local_path

    try:
        with open(local_path(uri), "rb") as f:
            data = f.read()
    except OSError as e:
        raise DecodeError(f"unreadable: {e.strerror or e}") from e
    if not data:
        raise DecodeError("empty file (0 bytes)")
    return data


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def open_image(data: bytes) -> Image.Image:
    """Read an image's header (format, mode, size) without decoding its pixels; refuses what
    `decode_image` would refuse before decoding (not an image, too many pixels)."""
    with _reasons():
        img = Image.open(io.BytesIO(data))
        if img.width * img.height > MAX_PIXELS:
            raise DecodeError(f"image too large ({img.width}x{img.height} pixels)")
        if img.width < 1 or img.height < 1:
            raise DecodeError("image has no pixels")
    return img


def decode_image(data: bytes, exif_transpose: bool = True) -> Image.Image:
    """Decode fully (so truncation is caught here) and convert to RGB."""
    img = open_image(data)
    with _reasons():
        img.load()
        if exif_transpose:
            img = ImageOps.exif_transpose(img)
        if img.mode != "RGB":
            img = img.convert("RGBA").convert("RGB") if "transparency" in img.info or img.mode in ("P", "LA") else img.convert("RGB")
    return img


@contextlib.contextmanager
def _reasons():
    """PIL's exceptions -> DecodeError with the quarantine reason."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except DecodeError:
        raise
    except Image.UnidentifiedImageError:
        raise DecodeError("not an image (format not recognised)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DecodeError(f"image too large: {e}") from None
    except (OSError, SyntaxError, ValueError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "truncated" in msg:
            msg = "truncated image: " + msg
        raise DecodeError(f"corrupt image: {msg}"[:300]) from None


def sample_image_sizes(uris: list[str], n: int = 32) -> list[tuple[int, int]]:
    """(width, height) of up to `n` images spread over `uris`, read from their headers only (no
    decode); files that are not readable images are passed over."""
    from .items import local_path

    step = max(1, len(uris) // n)
    out = []
    for uri in uris[::step][:n]:
        try:
            with Image.open(local_path(uri)) as img:
                out.append(img.size)
        except (OSError, ValueError, Image.DecompressionBombError):
            continue
    return out
