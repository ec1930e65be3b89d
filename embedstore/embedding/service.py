"""The embedding service: the one object that turns images (files, bytes, decoded pixels) and texts
into vectors, exactly as a vector set's stored vectors were made.

Every door goes through it: the local build and the Ray actors, `predict` and `evaluate` on new
files, search by image and by text, anomalies on new files, fine-tune's re-embedding and the
server's uploads. It owns the encoder (built from a vector set's provenance and checked against
it), the preprocessing, the device and precision, the normalisation and the stored dtype's round
trip, so a query vector is the vector the store would have held for the same file.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import logging
from typing import Any

import numpy as np

from ..errors import EmbedstoreError, EncoderError
from .accel import check_accel, openvino_installed, resolve_accel
from .device import autocast_dtype, resolve_device, resolve_precision, use_channels_last

log = logging.getLogger(__name__)
NORMALIZE = ("l2", "none")
DTYPES = ("float16", "float32")
BUILD_PRECISION = "build_precision"  # vector-set attribute: the precision its vectors were computed at (not part of its key)
# Vector-set attributes: the accelerated forward that computed the vectors ("openvino" or "none") and
# its library version. Not part of the set's key or name: at fp32 its vectors are the eager ones up
# to summation order (tests/test_accel.py: cosine >= 0.9999 on real images, and after the float16
# round trip nearly every component is identical), so an accelerated build and an eager one extend
# the same set (the attributes then name the forward of the build that wrote the set last), and the
# set's queries may run eager at its recorded precision.
BUILD_ACCEL, BUILD_ACCEL_VERSION = "build_accel", "build_accel_version"


def make_encoder(encoder_id: str, weights: str | None = None, layer: str | None = None, texts: bool = False,
                 preprocess: dict | None = None, overrides: dict | None = None):
    """The one place an encoder is constructed. `texts=True` on a CLIP model gives its text tower
    (vectors in the space of its images); `preprocess` (the dict a vector set's provenance records)
    replaces the image preprocessing; `overrides` (crop_pct, interpolation, resize_mode) adjust it."""
    from ..encoders import create_encoder

    enc = create_encoder(encoder_id, weights=weights, layer=layer)
    if texts and enc.cfg.modality == "image" and getattr(enc, "text_encoder", None) is not None:
        from ..encoders.open_clip_models import text_view

        enc = text_view(enc)
    asked = {k: v for k, v in (overrides or {}).items() if v is not None}
    if (preprocess or asked) and enc.cfg.modality != "image":
        if asked:
            raise EncoderError(f"--{next(iter(asked)).replace('_', '-')} sets image preprocessing; {enc.cfg.id} embeds texts")
        return enc
    if preprocess:
        enc.set_preprocess(preprocess)
    if asked:
        enc.set_preprocess(enc.cfg.preprocess.override(**asked))
    return enc


def layer_for(provenance: dict) -> str | None:
    """The `layer` argument that rebuilds the encoder of a vector set (a CLIP text set is made by
    the text tower of the model created with its default layer)."""
    if provenance.get("modality") == "text" and str(provenance.get("encoder", "")).startswith("open_clip:"):
        return None
    return provenance.get("layer")


def build_precision_here(recorded: str | None, asked: str, device) -> tuple[str, str | None]:
    """The precision to reproduce a vector set at, and why: an explicit `asked` precision wins; with
    "auto", the set's recorded build precision (a set built at fp32 on a CPU with native bf16 is
    then queried at fp32, cosine ~0.9999 with its stored vectors, not bf16's ~0.999); fp16 has no
    CPU autocast, so an fp16 set is reproduced at fp32 on CPU (the closer of the two). Sets built
    before the precision was recorded keep "auto" (reason None: the device's own choice)."""
    if asked != "auto" or recorded not in ("fp32", "bf16", "fp16"):
        return asked, None
    if recorded == "fp16" and device.type == "cpu":
        return "fp32", "the set was built at fp16 (GPU); CPU has no fp16, fp32 is closest"
    return recorded, f"the set was built at {recorded}"


def vector_problem(v: np.ndarray, dtype: str) -> str | None:
    """Why a vector cannot be stored (the quarantine reason), or None."""
    if not np.isfinite(v).all():
        return "encoder produced non-finite values"
    if dtype == "float16" and np.abs(v).max() > np.finfo(np.float16).max:
        return "vector exceeds float16 range; rebuild with --dtype float32 or --normalize l2"
    return None


class EmbeddingService:
    """An encoder with everything that decides its vectors: preprocessing, device, precision,
    normalisation and stored dtype. Create one with `EmbeddingService.create(...)` for a build or
    `EmbeddingService.from_provenance(prov)` to reproduce a stored vector set."""

    def __init__(self, encoder, normalize: str = "l2", dtype: str = "float16", device: str = "auto",
                 precision: str = "auto", accel: str = "none"):
        if normalize not in NORMALIZE:
            raise EncoderError(f"--normalize must be l2 or none, not '{normalize}'")
        if dtype not in DTYPES:
            raise EncoderError(f"--dtype must be float16 or float32, not '{dtype}'")
        self.encoder, self.normalize, self.dtype = encoder, normalize, dtype
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.accel_asked = check_accel(accel)
        forced = None
        if accel in ("openvino", "auto") and self.device.type == "cpu" and encoder.cfg.modality == "image":
            # exact fp32 through OpenVINO is faster than bf16 autocast on CPUs with native bf16 too
            # (benchmarks/bench_accel.py: Lite0 9.3x eager fp32 against 5.0x, ViT-S 2.3x against 2.0x;
            # bench_clip_retrieval.py: ViT-B-32 builds 17 items/s against 3.3), and its vectors are
            # the fp32 ones (bf16: worst cosine 0.986 on Lite0), the same on every CPU
            if precision == "auto" and accel == "openvino":
                precision, forced = "fp32", "auto: --accel openvino computes at fp32"
            elif precision == "auto" and openvino_installed():
                precision, forced = "fp32", "auto: exact fp32 through openvino (faster than bf16 autocast on CPU)"
            elif accel == "openvino" and precision != "fp32":
                raise EncoderError(f"--accel openvino computes at fp32, not {precision}; pass --precision fp32 (or auto), "
                                   "or --accel none")
        self.precision, self.precision_reason = resolve_precision(precision, self.device)
        self.precision_reason = forced or self.precision_reason
        self.channels_last = use_channels_last(encoder.cfg, self.device, self.precision)
        self._placed = False
        self._scale = None
        self._pixels: dict = {}
        self._resolve_accel()

    # ---- construction ----------------------------------------------------------------------
    @classmethod
    def create(cls, encoder_id: str, weights: str | None = None, layer: str | None = None, normalize: str = "l2",
               dtype: str = "float16", texts: bool = False, device: str = "auto", precision: str = "auto",
               overrides: dict | None = None, accel: str = "none") -> "EmbeddingService":
        """A service for a new or extended vector set (the build's door); `overrides` (crop_pct,
        interpolation, resize_mode) adjust the encoder's own image preprocessing; `accel` (auto |
        none | openvino) an accelerated CPU forward (see embedding/accel.py)."""
        return cls(make_encoder(encoder_id, weights, layer, texts, overrides=overrides), normalize, dtype, device, precision,
                   accel)

    @classmethod
    def from_provenance(cls, prov: dict, weights: str | None = None, device: str = "auto", precision: str = "auto",
                        error=EncoderError, accel: str = "none") -> "EmbeddingService":
        """The service that made a stored vector set, refused (raising `error`) unless the encoder
        found here gives exactly that provenance (weights hash, layer, preprocessing, dim ...).
        With `precision="auto"` it runs at the precision the set was built at, when the set records
        it (`build_precision`), rather than what "auto" means on this machine. Queries run eager
        (`accel="none"`) whatever accelerator built the set: converting a model costs more than a
        query, and the accelerator's fp32 vectors are the eager ones (tests/test_accel.py)."""
        from ..store.store import provenance_diffs

        if not isinstance(prov, dict) or "encoder" not in prov:
            raise error("the vectors record no encoder provenance; rebuild them with `embed build`")
        texts = prov.get("modality") == "text"
        pp = prov.get("preprocess") if not texts else None
        name = str(prov["encoder"])
        if name.startswith("external:"):  # `embed import`: vectors made elsewhere, by an encoder this tool does not have
            raise error(f"these vectors were imported from elsewhere ({name}): new items cannot be embedded as they were; "
                        "use a vector set embedstore built (--set NAME; `embed info` lists them), or build one with `embed build`")
        relative_dir = name.startswith("local-dir:") and not Path(name[len("local-dir:"):]).expanduser().is_absolute()
        try:
            enc = make_encoder(name, weights, layer_for(prov), texts, pp if isinstance(pp, dict) else None)
        except EmbedstoreError as e:
            if relative_dir:  # sets made before local-dir paths were recorded absolute
                hint = (f" (the set records the fine-tuned encoder's folder relative to where it was built: run from that "
                        f"folder, or re-embed with --encoder local-dir:/absolute/path)")
            else:
                hint = "" if weights or "--weights" in str(e) else " (if the store was built with --weights FILE, pass the same --weights FILE)"
            raise error(f"cannot rebuild the encoder {name} of these vectors: {e}{hint}") from None
        if relative_dir:  # found from the folder it was built in: the id it was recorded under
            enc.cfg = dataclasses.replace(enc.cfg, id=name)
        dev = resolve_device(device) if isinstance(device, str) else device
        precision, reason = build_precision_here(prov.get(BUILD_PRECISION), precision, dev)
        svc = cls(enc, prov.get("normalize", "l2"), prov.get("dtype", "float16"), dev, precision, accel)
        if reason:
            svc.precision_reason = reason
        mine = svc.provenance
        if mine.get("weights_sha256") != prov.get("weights_sha256"):
            raise error(f"the vectors were embedded with other {prov['encoder']} weights (sha256 {str(prov.get('weights_sha256'))[:12]}) "
                        f"than the ones found here ({str(mine.get('weights_sha256'))[:12]}); pass the store's --weights FILE")
        diffs = provenance_diffs(mine, prov)
        if diffs:
            raise error(f"the encoder built here gives {', '.join(f'{k}={mine.get(k)}' for k in diffs)}; the vectors were made "
                        f"with {', '.join(f'{k}={prov.get(k)}' for k in diffs)}; install the embedstore and library versions "
                        "that made them")
        return svc

    def set_precision(self, precision: str, reason: str) -> "EmbeddingService":
        """Run at another precision (before the first batch), e.g. the one a vector set was built at."""
        if self._placed:
            raise EncoderError("the precision is fixed once the encoder has run; set it before the first batch")
        self.precision, _ = resolve_precision(precision, self.device)
        self.precision_reason = reason
        self.channels_last = use_channels_last(self.encoder.cfg, self.device, self.precision)
        self._resolve_accel()
        return self

    # ---- the accelerated forward -----------------------------------------------------------
    def _resolve_accel(self) -> None:
        self.accel, self.accel_reason = resolve_accel(self.accel_asked, self.device, self.modality, self.precision)
        self.accel_note, self._accel_fwd, self._accel_ready = None, None, False

    def prepare_accel(self) -> "EmbeddingService":
        """Convert (or load from cache) and check the accelerated forward now rather than on the
        first batch; on failure `accel` becomes "none" and `accel_note` says why in one line."""
        if not self._accel_ready:
            from .accel import prepare

            self._accel_fwd, note = prepare(self.accel, self.encoder)
            if note:
                log.warning(note)
                self.accel, self.accel_reason, self.accel_note = "none", note, note
            self._accel_ready = True
        return self

    def accel_notes(self) -> list[str]:
        """What a build's summary says of the forward: the accelerator that ran, why none ran when
        one was asked for or would have run, or why it fell back to eager (one line each)."""
        self.prepare_accel()
        if self.accel_note:
            return [self.accel_note]
        if self.accel != "none":
            return [f"encoder forward: {self.accel} {self._accel_fwd.version.split('-')[0]} at fp32 "
                    f"({self.accel_reason}; checked against the eager model; --accel none to run eager)"]
        if self.accel_asked == "openvino" or "not installed" in self.accel_reason:
            return [f"encoder forward: eager ({self.accel_reason})"]
        return []

    def accel_attrs(self) -> dict[str, str]:
        """The vector-set attributes that record the forward that computed its vectors."""
        self.prepare_accel()
        return {BUILD_ACCEL: self.accel, BUILD_ACCEL_VERSION: getattr(self._accel_fwd, "version", "")}

    # ---- what it makes ---------------------------------------------------------------------
    @property
    def cfg(self):
        return self.encoder.cfg

    @property
    def modality(self) -> str:
        return self.encoder.cfg.modality

    @property
    def dim(self) -> int:
        return int(self.encoder.cfg.dim)

    @property
    def provenance(self) -> dict[str, Any]:
        return self.encoder.provenance(normalize=self.normalize, dtype=self.dtype)

    @property
    def set_name(self) -> str:
        from ..store.schema import set_name_for

        return set_name_for(self.provenance)

    @property
    def transform(self):
        """PIL RGB image -> float tensor (3, H, W): the image preprocessing of this set."""
        return self.encoder.transform

    def pixels(self, uint8: bool = False):
        """Image file bytes -> input tensor (3, H, W), the decode and preprocessing of this set
        (embedding/pixels.py); `uint8=True` stops before scaling (`scale` finishes on the device)."""
        from .pixels import Pixels

        pp = self.cfg.preprocess
        got = self._pixels.get(uint8)
        if got is None or got.pp != pp:  # the preprocessing may be set after the service is made
            got = self._pixels[uint8] = Pixels(pp, uint8)
        return got

    def scale(self, pixels):
        """uint8 batches (n, 3, H, W) -> scaled and normalised float32, on this service's device."""
        import torch

        from ..encoders.config import batch_normalizer

        if self._scale is None:
            self._scale = batch_normalizer(self.cfg.preprocess)
        x = pixels if isinstance(pixels, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(pixels))
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        return self._scale(x)

    # ---- encoding --------------------------------------------------------------------------
    def place(self) -> "EmbeddingService":
        """Move the encoder to its device (once)."""
        if not self._placed:
            self.encoder.to(self.device, channels_last=self.channels_last)
            self._placed = True
        return self

    def forward(self, batch) -> np.ndarray:
        """One batch -> float32 (n, dim), normalised, before the stored dtype's round trip.
        `batch` is a float tensor (n, 3, H, W) made by `transform` / `scale`, or a list of texts."""
        import torch
        import torch.nn.functional as F

        self.place()
        with torch.inference_mode():
            if isinstance(batch, list):
                feats = self.encoder(batch)
            else:
                feats = self._image_features(batch.to(self.device, non_blocking=True))
            feats = feats.float()
            if self.normalize == "l2":
                feats = F.normalize(feats, dim=1)
            return feats.cpu().numpy()

    def _image_features(self, x):
        """Image tensor -> features: the accelerated forward when there is one, else the eager
        encoder (channels_last and autocast as the precision asks)."""
        import torch

        if self.accel != "none":
            self.prepare_accel()
        if self._accel_fwd is not None:
            return self._accel_fwd(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        dtype = autocast_dtype(self.precision)
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            return self.encoder(x)

    def as_stored(self, v: np.ndarray) -> np.ndarray:
        """What reading the vector back from the store gives: the stored dtype's round trip, and for an
        l2 set the unit rows the store's reader returns (store/rows.unit_rows)."""
        from ..store.rows import unit_rows

        out = np.asarray(v, dtype=self.dtype).astype(np.float32)
        return unit_rows(out) if self.normalize == "l2" else out

    def embed(self, batch, what: str = "the input") -> np.ndarray:
        """`forward` + the stored dtype's round trip; refuses vectors the store would quarantine."""
        v = self.forward(batch)
        problem = vector_problem(v, self.dtype)
        if problem:
            raise EncoderError(f"{what} cannot be embedded: {problem}")
        return self.as_stored(v)

    def count_truncated(self, texts: list[str]) -> int:
        return self.encoder.count_truncated(texts)

    # ---- the doors' inputs -----------------------------------------------------------------
    def embed_image_bytes(self, data: bytes, name: str = "the image") -> np.ndarray:
        """One encoded image file's bytes -> (1, dim), as the store would hold it.
        Raises `DecodeError` (its message is the reason) for a file that is not a usable image."""
        self._need("image")
        return self.embed(self.pixels()(data).unsqueeze(0), name)

    def embed_image_batch(self, named: list[tuple[str, bytes]]) -> tuple[list[str], np.ndarray, list[tuple[str, str]]]:
        """Several encoded image files (name, bytes) -> (names embedded, their vectors (n, dim) as the
        store would hold them, [(name, reason)] for the files that are not usable images). Each is
        decoded as `embed_image_bytes` decodes it, and all are encoded in one forward pass (a batch
        of queries, as the build encodes batches)."""
        import torch

        from ..sources.images import DecodeError

        self._need("image")
        px = self.pixels()
        names, xs, bad = [], [], []
        for name, data in named:
            try:
                xs.append(px(data))
                names.append(name)
            except DecodeError as e:
                bad.append((name, str(e)))
        if not xs:
            return [], np.zeros((0, self.dim), np.float32), bad
        v = self.forward(torch.stack(xs))
        keep = []
        for i, name in enumerate(names):
            problem = vector_problem(v[i], self.dtype)
            if problem:
                bad.append((name, f"cannot be embedded: {problem}"))
            else:
                keep.append(i)
        return [names[i] for i in keep], self.as_stored(v[keep]), bad

    def embed_image_file(self, path: str) -> np.ndarray:
        from ..sources.images import read_bytes

        return self.embed_image_bytes(read_bytes(str(path)), str(path))

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Texts -> (n, dim): a text set's own encoder, or a CLIP image set's text tower (the shared space)."""
        if self.modality == "text":
            return self.embed(list(texts), "the text")
        tower = getattr(self.encoder, "text_encoder", None)
        if tower is None:
            raise EncoderError(f"text queries need a text store or one built with a CLIP encoder (open_clip:...); this set was "
                               f"made with {self.cfg.id}. Rebuild with e.g. --encoder open_clip:ViT-B-32/openai")
        import torch
        import torch.nn.functional as F

        self.place()
        with torch.inference_mode():
            feats = tower(list(texts)).float()
            if self.normalize == "l2":
                feats = F.normalize(feats, dim=1)
        return self.as_stored(feats.cpu().numpy())

    def _need(self, modality: str) -> None:
        if self.modality != modality:
            raise EncoderError(f"{self.cfg.id} embeds {self.modality}s, not {modality}s")

