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


def decode_image(data: bytes, exif_transpose: bool = True, notes: list | None = None) -> Image.Image:
    """Decode fully (so truncation is caught here), bring to 8 bits (`eight_bit`) and convert to RGB.
    `notes` (a list) gets a (kind, detail) pair for each thing about the file that the encoder's
    input hides (`IMAGE_NOTES`): transparency, a first frame of several, values that fill little of
    a 16-bit range. The pixels are the same with or without it."""
    img = open_image(data)
    with _reasons():
        if notes is not None:
            frames = _frames(img, data)
            if frames > 1 and img.format != "MPO":  # MPO: a camera's photo with its previews or depth map
                notes.append((FRAMES, f"{img.format}, first of {frames} frames"))
            # 16 bits a sample: PIL's rawmode says so before the load (I;16B, RGB;16B) and forgets it after
            wide = img.mode.startswith("I;16") or img.mode == "I" or any(";16" in str(t[3]) for t in img.tile if len(t) > 3)
        img.load()
        if notes is not None and wide:
            _note_low_range(img, notes)
        if exif_transpose:
            img = ImageOps.exif_transpose(img)
        img = eight_bit(img)
        if img.mode != "RGB":
            if "transparency" in img.info or img.mode in ("P", "LA"):
                img = img.convert("RGBA")
            if notes is not None and "A" in img.getbands():
                _note_transparency(img, notes)
            img = img.convert("RGB")  # the hidden colour under transparent pixels, as torchvision/timm/open_clip read it
        elif notes is not None and "transparency" in img.info:  # an RGB image with a transparent colour key
            _note_transparency(img.convert("RGBA"), notes)
    return img


# Kinds of note a decode gives (decode_image's `notes`), with what each means for the vectors: the
# build summary says them with their counts and ids (ingest/notes.py).
TRANSPARENCY, LOW_RANGE, FRAMES, CORRUPT_JPEG = "transparency", "low bit range", "frames", "corrupt JPEG data"
IMAGE_NOTES = {  # kind -> (which images, what it means for their vectors)
    TRANSPARENCY: ("with transparent pixels",
                   "embedded from the colour stored under the transparent pixels (PIL's convert('RGB'), as torchvision, "
                   "timm and open_clip pipelines read them), not from what a viewer shows, so cut-outs that look alike "
                   "can get distant vectors; flatten them onto a background before the build if the visible picture "
                   "is what should count"),
    LOW_RANGE: ("of 16 bits whose values fill under an eighth of that range",
                "e.g. 12-bit sensor data in a 16-bit file: brought to 8 bits by their high byte, they reached the "
                "encoder nearly black; rescale them to the full range (or save them as 8-bit) and build again"),
    FRAMES: ("with several frames or pages (animated GIF/PNG/WebP, multi-page TIFF)",
             "only the first frame was embedded; save each frame as its own file to embed it"),
    CORRUPT_JPEG: ("with corrupt JPEG data",
                   "libjpeg decoded them with a warning (or refused them and PIL decoded them leniently): they are "
                   "stored, but part of the picture may be grey or garbled; look at them, and re-export or remove them"),
}
LOW_RANGE_BITS = 13  # a 16-bit image whose brightest value needs fewer bits than this: under 32 of 255 once 8-bit


def _frames(img: Image.Image, data: bytes) -> int:
    """How many frames or pages an image has; 1 when they cannot be counted. Counted on a second
    opening of the bytes (PIL walks the frames' headers): the image decoded is left at its first
    frame, untouched, and a damaged later frame is no reason to refuse the first."""
    if getattr(type(img), "n_frames", None) is None:
        return 1
    try:
        with Image.open(io.BytesIO(data)) as other:
            return int(other.n_frames)
    except Exception:  # noqa: BLE001 - see above
        return 1


def _note_low_range(img: Image.Image, notes: list) -> None:
    """A 16-bit image (read as I;16 or I, or an RGB PNG PIL brought to 8 bits by its high byte)
    whose brightest value fits in fewer than LOW_RANGE_BITS bits."""
    ext = img.getextrema()
    if isinstance(ext[0], tuple):  # one (low, high) a band: the colour bands', not an alpha band's (opaque is 65535)
        hi = max(e[1] for e, band in zip(ext, img.getbands()) if band != "A")
    else:
        hi = ext[1]
    about = not img.mode.startswith("I")
    if about:  # PIL kept the high byte: the 16-bit value lies within it
        hi = (int(hi) << 8) | 0xFF
    if 0 <= hi < (1 << LOW_RANGE_BITS):
        notes.append((LOW_RANGE, f"brightest value {'at most ' if about else ''}{hi} of 65535, "
                                 f"{max(1, int(hi).bit_length())} of 16 bits used"))


def _note_transparency(img: Image.Image, notes: list) -> None:
    """An image with an alpha channel, some of it below opaque."""
    hist = img.getchannel("A").histogram()
    clear = 1 - hist[255] / max(1, sum(hist))
    if clear > 0:
        notes.append((TRANSPARENCY, f"{clear:.0%} of pixels transparent" if clear >= 0.005 else "under 1% of pixels transparent"))


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
