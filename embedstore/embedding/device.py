"""Choosing the device and numeric precision for encoding."""

from __future__ import annotations

import os

from ..errors import BuildError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_device(device: str):
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise BuildError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise BuildError(f"--device must be auto, cpu or cuda, not '{device}'")
    return torch.device(device)


def cpu_has_native_bf16() -> bool:
    import torch

    check = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool((check and check()) or (amx and amx()))


def resolve_precision(precision: str, device) -> tuple[str, str]:
    """The precision to run at, and why (said in the summary)."""
    import torch

    if precision not in PRECISIONS:
        raise BuildError(f"--precision must be one of {', '.join(PRECISIONS)}, not '{precision}'")
    if precision != "auto":
        if precision == "fp16" and device.type == "cpu":
            raise BuildError("--precision fp16 is not supported on CPU; use bf16 or fp32")
        return precision, "asked for"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", "auto: GPU supports bf16"
        return "fp16", "auto: GPU without bf16"
    if os.environ.get("EMBEDSTORE_CPU_BF16", "1") != "0" and cpu_has_native_bf16():
        return "bf16", "auto: CPU has native bf16"
    return "fp32", "auto: CPU without native bf16"


def use_channels_last(cfg, device, precision: str) -> bool:
    """CNNs run channels_last where it pays: on CUDA, and on CPU under bf16 (oneDNN)."""
    return cfg.family == "cnn" and (device.type == "cuda" or precision == "bf16")


def autocast_dtype(precision: str):
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


def default_workers(device) -> int:
    """Decode workers beside a GPU: every core but one for the main process. (On CPU the build
    splits the cores between decode and the encoder's threads: `ingest.loader.cpu_split`.)"""
    cores = os.cpu_count() or 2
    if device.type == "cpu":
        return max(1, min(8, cores))
    return max(1, min(16, cores - 1))
