"""Accelerated CPU forward passes against eager fp32, forward only, ratios in one run.

For EfficientNet-Lite0 (the bundled ImageNet weights) and a random-init timm ViT (speed does not
depend on the weights' values), on a batch of the bundled digits (real images): every candidate's
images/s, its ratio to eager fp32 and its worst cosine to the eager fp32 vectors. Candidates run in
interleaved rounds (median per candidate), so a load that comes and goes on a shared machine falls
on all of them alike; the load average is printed before and after.

    .venv/bin/python benchmarks/bench_accel.py                       # batch 32, 2 threads, 5 rounds
    .venv/bin/python benchmarks/bench_accel.py --compile             # also torch.compile (~1 min per model here)
    .venv/bin/python benchmarks/bench_accel.py --models lite0 --batch-size 8

Candidates: eager fp32 (the reference), channels_last fp32 (CNNs), bf16 autocast + channels_last
(what `--precision auto` picks on CPUs with native bf16), OpenVINO f32 through the embedding
service (what `--accel openvino` runs), ONNX Runtime fp32 when installed, dynamic int8 Linear
(ViTs), torch.compile with --compile.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
PARITY = 0.999


def candidates(svc, x, family: str, with_compile: bool, work: Path) -> dict:
    """name -> callable(float tensor) -> features; each set up (converted, compiled) here."""
    import torch

    model = svc.encoder.model
    out = {"eager fp32": model}
    if family == "cnn":
        cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
        out["channels_last fp32"] = lambda t: cl(t.contiguous(memory_format=torch.channels_last))
    bf = copy.deepcopy(model).to(memory_format=torch.channels_last) if family == "cnn" else model

    def bf16(t):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return bf(t.contiguous(memory_format=torch.channels_last) if family == "cnn" else t).float()

    out["bf16 autocast"] = bf16
    from embedstore.embedding.accel import prepare

    t0 = time.perf_counter()
    fwd, note = prepare("openvino", svc.encoder)
    if fwd is not None:
        print(f"  openvino: prepared in {time.perf_counter() - t0:.1f} s ({'cached IR' if fwd.cached else 'converted'}, checked)")
        out["openvino f32 (--accel)"] = fwd
    else:
        print(f"  openvino: {note}")
    try:
        import onnxruntime as ort

        path = work / f"{svc.cfg.arch}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x[:2],), str(path), dynamo=False, input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, opset_version=17)
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = torch.get_num_threads(), 1
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        out[f"onnxruntime {ort.__version__} fp32"] = lambda t: torch.from_numpy(sess.run(None, {"x": t.numpy()})[0])
    except Exception as e:  # noqa: BLE001 - a candidate that cannot run is said and skipped
        print(f"  onnxruntime: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}")
    if family == "vit":
        with warnings.catch_warnings():  # torch.ao.quantization's deprecation notice (torchao replaces it)
            warnings.simplefilter("ignore")
            out["dynamic int8 Linear"] = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear},
                                                                                dtype=torch.qint8)
    if with_compile:
        out["torch.compile inductor fp32"] = torch.compile(copy.deepcopy(model))
    return out


def run_model(encoder_id: str, weights: str | None, family: str, x_files, args, work: Path) -> list[dict]:
    import torch
    from PIL import Image

    from embedstore.embedding.service import EmbeddingService

    svc = EmbeddingService.create(encoder_id, weights, device="cpu", precision="fp32")
    x = torch.stack([svc.transform(Image.open(f).convert("RGB")) for f in x_files])
    fns = {}
    with torch.inference_mode():
        ref = svc.encoder.model(x).float()
        for name, fn in candidates(svc, x, family, args.compile, work).items():
            t0 = time.perf_counter()
            try:
                got = fn(x).float()
                fn(x)  # warm-up (first calls compile / allocate)
            except Exception as e:  # noqa: BLE001
                print(f"  {name}: failed ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})")
                continue
            cos = float(torch.nn.functional.cosine_similarity(got, ref, dim=1).min())
            fns[name] = (fn, cos, time.perf_counter() - t0)  # the first two calls (torch.compile compiles here)
        times = {name: [] for name in fns}
        for _ in range(args.rounds):
            for name, (fn, _, _) in fns.items():
                t0 = time.perf_counter()
                fn(x)
                times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["eager fp32"])
    rows = []
    for name, (fn, cos, first) in fns.items():
        med = statistics.median(times[name])
        rows.append(dict(model=encoder_id.split(":")[1] if weights is None else Path(weights).stem, candidate=name,
                         img_s=len(x) / med, ratio=base / med, worst_cos=cos, first_s=first))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="lite0,vit_small_patch16_224",
                    help="lite0 (effnet-lite:lite0, ImageNet weights) and/or timm ViT names (random init)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--compile", action="store_true", help="also torch.compile (inductor); slow to compile")
    args = ap.parse_args()
    import torch

    from embedstore.datasets import write_digits
    from embedstore.embedding.device import cpu_has_native_bf16

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench-accel-"))
    files = sorted(write_digits(work / "digits", per_class=-(-args.batch_size // 10)).rglob("*.png"))[: args.batch_size]
    load0 = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, {args.threads} threads, native bf16 {cpu_has_native_bf16()}, torch {torch.__version__}; "
          f"batch {len(files)} digits; load average {load0[0]:.1f} / {load0[1]:.1f} / {load0[2]:.1f}")
    rows = []
    for name in args.models.split(","):
        if name == "lite0":
            rows += run_model("effnet-lite:lite0", None, "cnn", files, args, work)
        else:
            import timm
            from safetensors.torch import save_file

            torch.manual_seed(0)
            w = work / f"{name}.safetensors"
            save_file(timm.create_model(name, pretrained=False).state_dict(), str(w))
            rows += run_model(f"timm:{name}", str(w), "vit" if "vit" in name else "cnn", files, args, work)
    print(f"{'model':24s} {'candidate':30s} {'img/s':>7s} {'x eager':>8s} {'worst cos':>10s} {'first s':>8s}  parity")
    for r in rows:
        ok = "ok" if r["worst_cos"] >= PARITY else f"FAILS (< {PARITY})"
        print(f"{r['model']:24s} {r['candidate']:30s} {r['img_s']:7.1f} {r['ratio']:8.2f} {r['worst_cos']:10.6f} "
              f"{r['first_s']:8.1f}  {ok}")
    load1 = os.getloadavg()
    print(f"load average after: {load1[0]:.1f} / {load1[1]:.1f} / {load1[2]:.1f} "
          "(ratios are within one run; absolute img/s fall with the load)")


if __name__ == "__main__":
    sys.exit(main())
