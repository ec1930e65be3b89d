"""Reading and decoding one image file, with a reason when it cannot be used."""

from __future__ import annotations

import contextlib
import hashlib
import io
import warnings

from PIL import Image, ImageFile, ImageOps

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is quarantined, never half-decoded
# Pixels an image may have (width x height) before it is quarantined unread: PIL's own guard against
# decompression bombs (Image.MAX_IMAGE_PIXELS, 89,478,485: about 9,500 x 9,500), which a huge scan or
# panorama can exceed honestly. EMBEDSTORE_MAX_IMAGE_PIXELS raises (or lowers) it; decoding such an
# image takes width x height x 3 bytes of memory in each decode worker.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS


def max_pixels() -> int:
    from ..settings import env_number

    return int(env_number("EMBEDSTORE_MAX_IMAGE_PIXELS", MAX_PIXELS, int, minimum=1))


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
    `decode_image` would refuse before decoding (not an image, a 12-bit JPEG, too many pixels)."""
    with _reasons():
        try:
            img = Image.open(io.BytesIO(data))
        except Image.UnidentifiedImageError:
            bits = _jpeg_precision(data)
            if bits not in (None, 8):
                raise DecodeError(f"{bits}-bit JPEG: only 8-bit JPEGs can be read; "
                                  "convert it to 8-bit (or to a 16-bit PNG)") from None
            raise
        limit = max_pixels()
        if img.width * img.height > limit:
            raise DecodeError(f"image too large ({img.width}x{img.height} = {img.width * img.height:,} pixels, over the "
                              f"limit of {limit:,}; raise it with EMBEDSTORE_MAX_IMAGE_PIXELS={img.width * img.height})")
        if img.width < 1 or img.height < 1:
            raise DecodeError("image has no pixels")
    return img


def decode_image(data: bytes, exif_transpose: bool = True) -> Image.Image:
    """Decode fully (so truncation is caught here), bring to 8 bits (`eight_bit`) and convert to RGB."""
    img = open_image(data)
    with _reasons():
        img.load()
        if exif_transpose:
            img = ImageOps.exif_transpose(img)
        img = eight_bit(img)
        if img.mode != "RGB":
            img = img.convert("RGBA").convert("RGB") if "transparency" in img.info or img.mode in ("P", "LA") else img.convert("RGB")
    return img


def thumbnail(img: Image.Image, size: int, **kw) -> Image.Image:
    """A decoded image's thumbnail as a viewer shows it (the server's and the reports'): 8-bit
    channels (`eight_bit`), at most `size` pixels a side, then turned by its EXIF orientation as the
    encoder's input is (turned after shrinking: a copy of the small image, not of the full one)."""
    turn = img.getexif().get(0x0112, 1)
    img = eight_bit(img)
    if img.mode not in ("RGB", "L", "RGBA"):
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    img.thumbnail((size, size), **kw)
    T = Image.Transpose  # the orientation -> transposition table of PIL's ImageOps.exif_transpose
    method = {2: T.FLIP_LEFT_RIGHT, 3: T.ROTATE_180, 4: T.FLIP_TOP_BOTTOM, 5: T.TRANSPOSE, 6: T.ROTATE_270,
              7: T.TRANSVERSE, 8: T.ROTATE_90}.get(turn)
    return img if method is None else img.transpose(method)


def eight_bit(img: Image.Image) -> Image.Image:
    """A decoded image with 8-bit channels, for every decode of image files (the encoders' input,
    the server's and the reports' thumbnails). 16-bit greyscale (modes I;16, I;16B, I;16L, and I
    whose values lie within 0..65535, as 16-bit TIFFs open) keeps the high byte of each value (an
    8-bit L image): how PIL itself reads 16-bit RGB and RGBA PNGs and torchvision's `to_dtype`
    scales uint16, and exact for the two usual widenings of 8-bit data (v * 257 and v << 8).
    PIL's own conversion clips every value above 255 to white. Other modes are returned as they
    are. Raises DecodeError for F, and for I with values outside 0..65535: they have no fixed
    range to scale from."""
    import numpy as np

    if img.mode.startswith("I;16"):
        return Image.fromarray((np.asarray(img) >> 8).astype(np.uint8))
    if img.mode == "I":
        lo, hi = img.getextrema()
        if lo < 0 or hi > 65535:
            raise DecodeError(f"32-bit integer image (PIL mode I) with values {lo}..{hi}, outside 0..65535: "
                              "no fixed range to scale to 8 bits; convert it to 8- or 16-bit")
        return Image.fromarray((np.asarray(img) >> 8).astype(np.uint8))
    if img.mode == "F":
        raise DecodeError("floating-point image (PIL mode F): no fixed range to scale to 8 bits; convert it to 8- or 16-bit")
    return img


def _jpeg_precision(data: bytes) -> int | None:
    """The sample precision (bits) in a JPEG's frame header; None for a file that is not a JPEG or
    whose header cannot be found."""
    if not data.startswith(b"\xff\xd8"):
        return None
    i = 2
    while i + 4 < len(data) and data[i] == 0xFF:
        marker, length = data[i + 1], int.from_bytes(data[i + 2:i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start of frame
            return data[i + 4] if i + 4 < len(data) else None
        i += 2 + length
    return None


@contextlib.contextmanager
def _reasons():
    """PIL's exceptions -> DecodeError with the quarantine reason."""
    pil_limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            # the size is checked against max_pixels() before any pixel is decoded; PIL's own guard
            # (a warning above its limit, an error at twice it) would otherwise refuse first
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = max(max_pixels(), MAX_PIXELS)
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
    finally:
        Image.MAX_IMAGE_PIXELS = pil_limit


def sample_image_sizes(uris: list[str], n: int = 32) -> list[tuple[int, int]]:
    """(width, height) of up to `n` images spread over `uris`, read from their headers only (no
    decode); files that are not readable images are passed over."""
    from .items import local_path

    step = max(1, len(uris) // n)
    out = []
    for uri in uris[::step][:n]:
        try:
            with warnings.catch_warnings():  # a huge image is only measured here; the build says why it is refused
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(local_path(uri)) as img:
                    out.append(img.size)
        except (OSError, ValueError, Image.DecompressionBombError):
            continue
    return out
