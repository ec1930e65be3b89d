"""Image file bytes -> the encoder's input tensor (3, H, W): the one decode and preprocessing of
every door (build workers, Ray decode tasks, queries, the server's uploads, fine-tune's evaluation),
and its batched form on the encoder's device (`embed build --decode device`: nvJPEG on a GPU).

JPEGs of RGB or grey pixels are decoded by torchvision (libjpeg-turbo on the CPU) and resized as
uint8 tensors; everything else (PNG, WebP, GIF, CMYK JPEGs ...) by PIL, as before. Measured on 2
cores (scikit-learn's sample photos upscaled and re-saved as JPEG; EfficientNet-Lite0's resize 256
+ crop 224, bicubic): 1.9-5.1 ms an image at 640x427 and 1280x854 and 31-32 ms at 3840x2562,
against 3.9-11 and 74-81 ms through PIL. The decoded pixels are PIL's exactly; after the antialiased
resize 0.06-0.6% of the values differ from PIL's by one level (one in 150,000 by two), and the
vectors' cosine is >= 0.99999 (tests/test_pixels.py). Where the tensor resize strays further from
PIL's, PIL keeps the file: "squash" resizing (unequal scales on the two axes: up to 7 levels off,
cosine 0.9997), nearest-neighbour resizing (torch picks a neighbouring row or column of PIL's
for 0.3-0.4% of the values at some sizes, whatever the mode) and preprocessing without
antialiasing (PIL antialiases regardless).

EXIF orientation is read from PIL's header (EXIF, or XMP where EXIF has none: what
`ImageOps.exif_transpose` applies) and applied to the tensor here: torchvision reads only the first
APP1 segment, and its CUDA decoder ignores orientation altogether.

A JPEG torchvision refuses goes to PIL, whose reason is the one a quarantined file gets (or whose
pixels are used where PIL is the more lenient). A build (`notes` given) also reads what libjpeg says
of corrupt data it decodes anyway, which it would print on stderr, and notes the file (`_libjpeg_said`). JPEGs are 8-bit here: neither decoder reads 12-bit
ones, and the header check quarantines them before either tries. 16-bit greyscale files (PNG,
TIFF) reach the encoder at 8 bits, scaled by `sources.images.eight_bit` (PIL's conversion to RGB
alone clips them to white); floating-point images are quarantined.
"""

from __future__ import annotations

import threading
from typing import Any, NamedTuple

from ..encoders.config import Preprocess, batch_normalizer, build_transform, resize_steps
from ..sources.images import CORRUPT_JPEG, DecodeError, decode_image, open_image

DECODES = ("workers", "device")
JPEG_MODES = ("RGB", "L")  # CMYK and YCCK JPEGs keep PIL's colour conversion
EOI = b"\xff\xd9"  # the marker a whole JPEG ends with
ORIENTATION = 0x0112  # the EXIF tag


class JpegFile(NamedTuple):
    """A JPEG file left to the encoder's device (`--decode device`): its bytes and the EXIF
    orientation to apply once decoded."""

    data: Any  # 1-D uint8 tensor
    orientation: int = 1


def as_tensor(data: bytes):
    """A file's bytes as the 1-D uint8 tensor torchvision's decoders take."""
    import torch

    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def orient(x, orientation: int):
    """Apply an EXIF orientation (2-8) to an image tensor (..., H, W) as PIL's exif_transpose does."""
    import torch

    if orientation == 2:
        return x.flip(-1)
    if orientation == 3:
        return x.flip(-1, -2)
    if orientation == 4:
        return x.flip(-2)
    if orientation == 5:
        return x.transpose(-1, -2)
    if orientation == 6:
        return torch.rot90(x, -1, (-2, -1))
    if orientation == 7:
        return x.flip(-1, -2).transpose(-1, -2)
    if orientation == 8:
        return torch.rot90(x, 1, (-2, -1))
    return x


class Pixels:
    """Decode and preprocess image files exactly as a vector set's vectors were made. Call it on
    one file's bytes; `uint8=True` stops before scaling (`batch_normalizer` finishes whole batches
    on the encoder's device)."""

    def __init__(self, pp: Preprocess, uint8: bool = False):
        from torchvision.transforms import v2 as T

        self.pp, self.uint8 = pp, uint8
        self._pil = build_transform(pp, uint8=uint8)
        self._steps = T.Compose(resize_steps(pp))
        self._finish = None if uint8 else batch_normalizer(pp)
        # else PIL decodes every file (see above)
        self._tensors = pp.antialias and pp.resize_mode != "squash" and pp.interpolation != "nearest"
        self._cpu = None

    def __call__(self, data: bytes, notes: list | None = None):
        """One file's bytes -> tensor (3, input_size, input_size); raises DecodeError (its message
        is the quarantine reason) for a file that is not a usable image. `notes` (a list) gets what
        the decode hides from the encoder's input (`sources.images.IMAGE_NOTES`), as (kind, detail);
        the tensor is the same either way."""
        orientation = self.jpeg_orientation(data)
        if orientation is not None:
            if notes is None:
                x = self.decode_jpegs([data], "cpu")[0]
            else:
                x, said, refused = _libjpeg_said(data)
                if said or refused:  # refused: PIL decodes it below, or quarantines it with its reason
                    notes.append((CORRUPT_JPEG, "; ".join(filter(None, (
                        said, refused and f"libjpeg refused it ({refused}); PIL decoded it leniently")))))
            if x is not None:
                x = self._steps(orient(x, orientation))
                return x if self._finish is None else self._finish(x)
        elif notes is not None and data[:2] == b"\xff\xd8":  # a JPEG PIL decodes: libjpeg still judges its data
            said = _libjpeg_said(data)[1]  # its warnings only: libjpeg may refuse what only PIL reads (CMYK)
            if said:
                notes.append((CORRUPT_JPEG, said))
        return self._pil(decode_image(data, self.pp.exif_transpose, notes))

    def jpeg_orientation(self, data: bytes) -> int | None:
        """For a file torchvision decodes here (a JPEG of RGB or grey pixels), the EXIF orientation
        to apply (1: none); None for a file PIL decodes. Raises DecodeError as a call would."""
        img = open_image(data)
        if not (self._tensors and img.format == "JPEG" and img.mode in JPEG_MODES):
            return None
        if not self.pp.exif_transpose:
            return 1
        try:
            o = img.getexif().get(ORIENTATION, 1)
        except Exception:  # noqa: BLE001 - EXIF PIL cannot read: PIL's own decode decides (its reason, or no turn)
            return None
        return o if o in range(2, 9) else 1

    def on_cpu(self, data: bytes):
        """One file decoded and resized on this process's CPU, as uint8 (what a worker sends)."""
        if self._cpu is None:
            self._cpu = self if self.uint8 else Pixels(self.pp, uint8=True)
        return self._cpu(data)

    def for_device(self, data: bytes) -> JpegFile | None:
        """`--decode device`: the file to leave to the encoder's device, or None when a worker should
        decode it. The device may decode it when torchvision would decode it here and it ends with
        the end-of-image marker: a truncated file stays with the CPU, whose decoder refuses it, where
        nvJPEG may decode what is there. Raises DecodeError as a call would."""
        orientation = self.jpeg_orientation(data)
        return JpegFile(as_tensor(data), orientation) if orientation is not None and data.endswith(EOI) else None

    def decode_jpegs(self, files: list, device) -> list:
        """JPEG files (bytes or 1-D uint8 tensors) -> uint8 tensors (3, H, W) on `device`, as stored
        (no EXIF orientation applied); None for a file the decoder refuses. On a GPU the files go in
        one batched nvJPEG call (each is tried alone when the batch fails); on a CPU one call each is
        as fast."""
        import torch

        device = torch.device(device)
        data = [f if isinstance(f, torch.Tensor) else as_tensor(f) for f in files]
        if device.type != "cuda":
            return [self._decode_jpeg(d, device) for d in data]
        # torchvision's nvJPEG decoder allocates its output on the caller's stream but writes it from
        # a stream of its own without waiting: a block freed by kernels still queued can be
        # overwritten (pytorch/vision#9606). Nothing is queued once the stream has drained.
        torch.cuda.current_stream(device).synchronize()
        out = self._decode_jpeg(data, device) if len(data) > 1 else None
        return list(out) if out is not None else [self._decode_jpeg(d, device) for d in data]

    @staticmethod
    def _decode_jpeg(data, device, raise_: bool = False):
        """torchvision's JPEG decoder (libjpeg-turbo, or nvJPEG on CUDA); None when it refuses.

        torchvision 0.29 marks its image decoders deprecated in favour of TorchCodec's (0.16+). They
        are in every torchvision the project supports (scripts/constraints.txt pins 0.29), so the
        warning is silenced here. TorchCodec 0.17 was tried as the replacement: the same pixels and
        the same speed; the move is due when the pinned pair passes 0.29."""
        import warnings

        from torchvision.io import ImageReadMode, decode_jpeg

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
        except RuntimeError:
            if raise_:
                raise
            return None

    def batch_on_device(self, parts: list, device):
        """A batch whose items are uint8 tensors (3, S, S) made by workers or `JpegFile`s left to the
        device -> (float tensor (n_ok, 3, S, S) on `device`, scaled and normalised; {position:
        quarantine reason} for the files neither decoder could use, left out of the tensor; how many
        files the device refused and this process's CPU decoded)."""
        import torch

        if self.uint8:
            raise ValueError("batch_on_device finishes the batch: make it with Pixels(pp), not uint8=True")
        device = torch.device(device)
        files = [i for i, x in enumerate(parts) if isinstance(x, JpegFile)]
        out = {i: x.to(device, non_blocking=True) for i, x in enumerate(parts) if not isinstance(x, JpegFile)}
        failed: dict[int, str] = {}
        on_cpu = 0
        for i, x in zip(files, self.decode_jpegs([parts[i].data for i in files], device) if files else []):
            if x is not None:
                out[i] = self._steps(orient(x, parts[i].orientation))
                continue
            try:  # the device's decoder refused it: this process's CPU decides
                out[i] = self.on_cpu(parts[i].data.numpy().tobytes()).to(device)
                on_cpu += 1
            except DecodeError as e:
                failed[i] = str(e)
        kept = [out[i] for i in range(len(parts)) if i in out]
        return (self._finish(torch.stack(kept)) if kept else None), failed, on_cpu


# What libjpeg says of corrupt data that it decodes anyway ("Corrupt JPEG data: 12 extraneous bytes
# before marker 0xd9", "Premature end of JPEG file"): its default error manager, which torchvision
# keeps, prints the first warning of a decode to the process's stderr, and neither torchvision nor
# Pillow (whose error manager drops warnings: python-pillow/Pillow#9106) tells the caller.
CORRUPT_SAID = ("Corrupt JPEG data", "Premature end of JPEG file")
_STDERR_COPY = None  # (pid, a temporary file that stderr points at during a checked decode), one per process
_STDERR_LOCK = threading.Lock()  # fd 2 is the process's: one checked decode at a time (threads of the Python API)


def _libjpeg_said(data: bytes):
    """(pixels as torchvision's CPU decoder gives them, or None when it refuses; libjpeg's warnings
    of corrupt data, joined; its error when it refused, or ""). The warnings are read by pointing
    file descriptor 2 at a temporary file for the decode; anything else written there meanwhile
    (libjpeg's other warnings, another thread's output) is passed on to stderr."""
    with _STDERR_LOCK:
        return _said_locked(data)


def _said_locked(data: bytes):
    import os
    import sys
    import tempfile

    global _STDERR_COPY
    if _STDERR_COPY is None or _STDERR_COPY[0] != os.getpid():  # not one a forked decode worker shares
        _STDERR_COPY = (os.getpid(), tempfile.TemporaryFile())
    tmp = _STDERR_COPY[1]
    tmp.seek(0)
    tmp.truncate()
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (AttributeError, OSError, ValueError):  # no stderr to point elsewhere: libjpeg's words are lost
        saved = None
    refused = ""
    try:
        if saved is not None:
            os.dup2(tmp.fileno(), 2)
        try:
            x = Pixels._decode_jpeg(as_tensor(data), "cpu", raise_=True)
        except RuntimeError as e:
            # torchvision's message names its C++ source: "decode_jpeg, /path/decode_jpeg.cpp:171, Image is ..."
            x, refused = None, (str(e).strip().splitlines() or [type(e).__name__])[0].rsplit(", ", 1)[-1][:200]
    finally:
        if saved is not None:
            os.dup2(saved, 2)
            os.close(saved)
    tmp.seek(0)
    said, other = [], []
    for line in tmp.read().decode("utf-8", "replace").splitlines(keepends=True):
        (said if line.startswith(CORRUPT_SAID) else other).append(line)
    if other:
        try:
            os.write(2, "".join(other).encode())
        except OSError:  # stderr closed or gone (a pipe whose reader left): its words are lost, the image is not
            pass
    return x, "; ".join(dict.fromkeys(line.strip() for line in said))[:300], refused
