"""An accelerated CPU forward pass for image encoders, exact at fp32: OpenVINO.

Why OpenVINO (benchmarks/bench_accel.py measures every candidate against eager fp32, forward only,
in one run): on this workplace's 2-core AMD EPYC (native bf16), load average 2.5-8 from other
sessions, real digits through EfficientNet-Lite0 and a random-init ViT-S/16, batch 32, 2 threads:
- OpenVINO 2026.4 at f32:        Lite0 9.3-13x eager fp32, ViT-S 2.3x; worst cosine 1.000000;
- ONNX Runtime 1.31 (fp32):      Lite0 6.2-7.5x, ViT-S 1.6x; cosine 1.000000;
- torch.compile (inductor):      Lite0 2.2x after 55 s of compiling; cosine 1.000000;
- TorchScript freeze (oneDNN):   Lite0 1.8x; channels_last alone 1.6-1.7x;
- bf16 autocast (`--precision auto` on CPUs with native bf16): Lite0 1.9-5.0x, ViT-S 1.7-2.0x,
  but worst cosine 0.986 on the digits for Lite0: not the fp32 vectors;
- dynamic int8 Linear (ViT-S):   2.4-2.5x, cosine 0.9947: fails the 0.999 parity bar.
With torch held to AVX2 (ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2, as on the issue's
CPUs; OpenVINO keeps its own ISA choice, so this only approximates them) Lite0 eager fp32 ran
12.8 img/s and OpenVINO 17x that.
OpenVINO is fastest on both and computes in f32 (INFERENCE_PRECISION_HINT f32: its CPU plugin
would otherwise pick bf16 on CPUs that have it), so its vectors are the eager fp32 vectors up to
summation order. It does not depend on native bf16, which the issue's AVX2-only users lack.

Costs and guards: converting a model (a torch.jit trace) takes ~20 s here, so the converted model
is cached as OpenVINO IR under $EMBEDSTORE_CACHE_DIR/openvino/, keyed by encoder id, weights sha256,
layer, input size and the torch/openvino versions (loading it back: ~0.1 s). Every time it is
prepared, its output on a seeded input is compared with the eager model's (cosine >= 0.9999);
a failed import, conversion or check falls back to eager with a one-line note.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import warnings
from pathlib import Path

from ..errors import EncoderError

log = logging.getLogger(__name__)
ACCELS = ("auto", "none", "openvino")
CHECK_COS = 0.9999  # prepared model vs eager fp32 on a seeded batch; f32 differs only by summation order
INSTALL_HINT = "pip install 'embedstore[openvino]'"


def check_accel(accel: str) -> str:
    if accel not in ACCELS:
        raise EncoderError(f"--accel must be one of {', '.join(ACCELS)}, not '{accel}'")
    return accel


def openvino_installed() -> bool:
    return importlib.util.find_spec("openvino") is not None


def resolve_accel(asked: str, device, modality: str, precision: str) -> tuple[str, str]:
    """The accelerator to use ("openvino" or "none") and why (said in the build summary).
    OpenVINO runs image encoders on CPU at fp32 only; "auto" takes it where that holds and it is
    installed (and `--precision auto` resolves to fp32 then: EmbeddingService); an explicit bf16
    build, a set built at bf16 and a GPU build run eager."""
    check_accel(asked)
    if asked == "none":
        return "none", "asked for"
    where = "auto" if asked == "auto" else "--accel openvino"
    if device.type != "cpu":
        return "none", f"{where}: the encoder runs on {device.type}; openvino is a CPU path"
    if modality != "image":
        return "none", f"{where}: {modality} encoders run eager"
    if precision != "fp32":
        return "none", f"{where}: openvino computes at fp32 and this set is computed at {precision}"
    if not openvino_installed():
        return "none", f"{where}: openvino is not installed ({INSTALL_HINT} for an exact fp32 path ~2-10x faster)"
    return "openvino", f"{where}: CPU fp32 image encoder"


def _cache_dir() -> Path:
    return Path(os.environ.get("EMBEDSTORE_CACHE_DIR") or Path.home() / ".cache" / "embedstore") / "openvino"


def _cache_key(encoder, size: int) -> str | None:
    """What decides the converted model; None (no caching) when the weights have no hash."""
    import openvino
    import torch

    if not encoder.weights_sha256:
        return None
    parts = [encoder.cfg.id, encoder.weights_sha256, str(encoder.cfg.layer), str(size), torch.__version__,
             openvino.__version__]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:24]


def _convert(model, size: int):
    """torch module -> OpenVINO model with a dynamic batch dimension."""
    import openvino as ov
    import torch

    with torch.no_grad(), warnings.catch_warnings():  # torch.jit.trace's deprecation and tracer warnings: noise here
        warnings.simplefilter("ignore")
        return ov.convert_model(model, example_input=torch.zeros(2, 3, size, size),
                                input=[ov.PartialShape([-1, 3, size, size])])


def _load_or_convert(encoder, size: int):
    """The converted model, from the IR cache when it holds this encoder's (written atomically:
    temporary names, then the weights file renamed before the graph file that is looked for)."""
    import openvino as ov

    key = _cache_key(encoder, size)
    if key is None:
        return _convert(encoder.model, size), False
    xml, bin_ = _cache_dir() / f"{key}.xml", _cache_dir() / f"{key}.bin"
    if xml.exists() and bin_.exists():
        try:
            return _core().read_model(str(xml), str(bin_)), True
        except Exception as e:  # noqa: BLE001 - a damaged cache entry is converted again
            log.info("openvino cache entry %s unreadable (%s); converting again", xml.name, e)
    om = _convert(encoder.model, size)
    try:
        xml.parent.mkdir(parents=True, exist_ok=True)
        tmp = xml.with_name(f".{key}.{os.getpid()}.xml")
        ov.save_model(om, str(tmp), compress_to_fp16=False)
        os.replace(tmp.with_suffix(".bin"), bin_)
        os.replace(tmp, xml)
    except OSError as e:  # an unwritable cache costs the next build a conversion, nothing else
        log.info("cannot cache the openvino model in %s: %s", xml.parent, e)
    return om, False


_CORE = None  # one OpenVINO runtime per process
_THREADS = None  # and one thread count: models compiled for different counts crashed the process (SIGSEGV) at
#                 its next fork (tests/test_build_load.py; the test suite, where many builds share a process)


def _core():
    global _CORE
    import openvino as ov

    if _CORE is None:
        _CORE = ov.Core()
    return _CORE


def _threads() -> int:
    """The thread count every model of this process is compiled for: torch's when the first one is
    compiled (the build sets torch's threads before it prepares the model)."""
    global _THREADS
    import torch

    if _THREADS is None:
        _THREADS = torch.get_num_threads()
    return _THREADS


class OpenVINOForward:
    """`forward(x)`: float32 torch (n, 3, S, S) -> float32 torch (n, dim), by an OpenVINO model
    compiled once, on first use, for the CPU at f32 with the process's one thread count (see
    `_threads`): never recompiled, and never compiled for another count in one process."""

    def __init__(self, encoder):
        import openvino

        self.size = int(encoder.cfg.preprocess.input_size)
        self.model, self.cached = _load_or_convert(encoder, self.size)
        self.version = openvino.__version__
        self._compiled, self.threads = None, None

    def _compiled_model(self):
        if self._compiled is None:
            self.threads = _threads()
            self._compiled = _core().compile_model(self.model, "CPU", {
                "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": self.threads, "PERFORMANCE_HINT": "LATENCY"})
        return self._compiled

    def __call__(self, x):
        import numpy as np
        import torch

        out = self._compiled_model()(np.ascontiguousarray(x.detach().cpu().float().numpy()))[0]
        return torch.from_numpy(np.array(out, dtype=np.float32, copy=True))


def worst_cosine(a, b) -> float:
    import torch.nn.functional as F

    return float(F.cosine_similarity(a.float(), b.float(), dim=1).min())


def prepare(name: str, encoder):
    """(forward or None, note or None): the accelerated forward for `name`, checked against the
    eager model on a seeded batch; None with a one-line note when its library, conversion or
    check fails (the caller runs eager)."""
    import torch

    if name == "none":
        return None, None
    try:
        fwd = OpenVINOForward(encoder)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(2, 3, fwd.size, fwd.size, generator=g).clamp_(-2.5, 2.5)
        with torch.inference_mode():
            want = encoder(x).float()
        got = fwd(x)
        cos = worst_cosine(got, want)
        if not cos >= CHECK_COS:
            return None, (f"openvino's {encoder.cfg.id} disagrees with the eager model (cosine {cos:.5f} < {CHECK_COS}); "
                          "ran eager fp32 instead")
        return fwd, None
    except ImportError as e:
        return None, f"openvino could not be imported ({e}; {INSTALL_HINT}); ran eager fp32 instead"
    except Exception as e:  # noqa: BLE001 - any export/compile failure falls back to the eager model
        first = (str(e).strip().splitlines() or [""])[0][:160]
        return None, f"openvino could not convert {encoder.cfg.id} ({type(e).__name__}: {first}); ran eager fp32 instead"
