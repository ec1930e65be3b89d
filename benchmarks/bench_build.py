"""Whole `embed build` commands against the encoder's forward-only speed, idle and under a competing load.

One run prints, for the default encoder (EfficientNet-Lite0, offline weights) at the build's own
batch size, encoder threads and precision:
- whole command / forward-only on N and 10N generated JPEGs (default 400 and 4,000): the command is
  `embed build ... --json` in a fresh process, timed from outside (imports, model load, decode,
  encode, write, index); forward-only is the embedding service on pre-made tensors;
- the N-image build again while a second process spins on one core, as a ratio to the idle build
  (target >= 0.4: a fair share of two cores, not what is left over);
- the machine: cores, native bf16 or not, GPU or not, and the 1-minute load average before each
  run (other people's work on a shared machine shows there).
Peak RSS for M and 4M items (fresh processes) is printed with --rss.

    .venv/bin/python benchmarks/bench_build.py                      # 400 and 4,000 images, ~4 minutes on 2 cores
    .venv/bin/python benchmarks/bench_build.py --n 100 --encoder test:tiny
    .venv/bin/python benchmarks/bench_build.py --build-args="--batch-size 64"   # any other build setting
    .venv/bin/python benchmarks/bench_build.py --size 2048x1536 --n 200 # photo-sized files: decoding dominates
    .venv/bin/python benchmarks/bench_build.py --encoder timm:vit_base_patch32_224   # timm and torchvision models: random weights
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
EMBED = [sys.executable, "-c", "import sys; from embedstore.cli.main import main; sys.argv[0] = 'embed'; sys.exit(main())"]


def make_jpegs(root: Path, n: int, size=(320, 240), seed: int = 0) -> Path:
    """Photo-sized JPEGs with smooth structure plus noise, 10 class folders."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : size[1], 0 : size[0]].astype(np.float32)
    for i in range(n):
        c = i % 10
        d = root / f"class{c}"
        d.mkdir(parents=True, exist_ok=True)
        f = d / f"img_{i:06d}.jpg"
        if f.exists():
            continue
        phase = rng.uniform(0, 6.28, 3)
        img = np.stack([127 + 100 * np.sin(xx / (8 + c) + phase[k] + yy / (11 + k)) for k in range(3)], -1)
        img += rng.normal(0, 12, img.shape)
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(f, quality=90)
    return root


def random_weights(encoder_id: str, out: Path) -> str | None:
    """Offline, torchvision and timm models run with random weights (saved here, passed as
    --weights): speed does not depend on the values."""
    family, _, name = encoder_id.partition(":")
    if family not in ("torchvision", "timm"):
        return None
    path = out / f"{family}-{name}.safetensors"
    if not path.exists():
        from safetensors.torch import save_file

        if family == "torchvision":
            import torchvision

            model = torchvision.models.get_model(name, weights=None)
        else:
            import timm

            model = timm.create_model(name, pretrained=False)
        save_file(model.state_dict(), str(path))
    return str(path)


def load() -> float:
    return os.getloadavg()[0]


def forward_only(encoder_id: str, weights: str | None, n: int, batch_size: int, threads: int, precision: str,
                 accel: str = "none") -> float:
    """The encoder's own speed through the embedding service (forward, normalisation), no files, in a
    fresh process with the build's threads, batch size, precision and accelerated forward (the
    build's `accel`: the ceiling is the forward the build ran, not eager when it ran openvino)."""
    code = f"""
import time, torch
from embedstore.embedding import EmbeddingService
if {threads}:
    torch.set_num_threads({threads})
svc = EmbeddingService.create({encoder_id!r}, weights={weights!r}, precision={precision!r}, accel={accel!r}).place()
svc.prepare_accel()
assert svc.accel == {accel!r}, svc.accel_note
s = svc.cfg.preprocess.input_size
x = torch.randn({batch_size}, 3, s, s)
svc.forward(x); svc.forward(x)  # warm-up
if svc.device.type == "cuda":
    torch.cuda.synchronize()
t0 = time.perf_counter(); done = 0
while done < {n}:
    svc.forward(x); done += {batch_size}
if svc.device.type == "cuda":
    torch.cuda.synchronize()
print(done / (time.perf_counter() - t0))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return float(out.split()[-1])


def whole_command(src: Path, store: Path, encoder_id: str, weights: str | None, extra: list[str]) -> dict:
    """`embed build` in a fresh process, timed from outside; its --json report with the wall time."""
    for p in (store, store.with_name(store.name + ".d")):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    cmd = EMBED + ["build", str(src), "--store", str(store), "--encoder", encoder_id, "--json", "--quiet", *extra]
    if weights:
        cmd += ["--weights", weights]
    load_before = load()
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode:
        raise SystemExit(f"embed build failed: {out.stderr.strip()}")
    r = json.loads(out.stdout)
    r.update(command_s=wall, command_items_s=r["encoded"] / wall, load_before=load_before)
    return r


class Spinner:
    """A second process spinning on one core: the competing load."""

    def __enter__(self):
        self.p = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(0.5)
        return self

    def __exit__(self, *exc):
        self.p.kill()
        self.p.wait()


def describe(tag: str, r: dict, fwd: float) -> str:
    return (f"{tag:22} {r['encoded']:6d} {r['command_s']:7.1f}s {r['command_items_s']:7.1f} {r['loop_items_per_s']:7.1f} "
            f"{fwd:7.1f} {r['command_items_s'] / fwd:6.2f} {r['loop_items_per_s'] / fwd:6.2f}  "
            f"start {r['startup_s']:.1f}s, wait-on-decode {r.get('decode_wait_share', r['read_s'] / r['loop_s']):.0%}, finish {r['finish_s']:.1f}s, "
            f"load {r['load_before']:.1f}")


def peak_rss_mb(src: Path, store: Path, encoder_id: str, weights: str | None) -> float:
    # the build process's own peak (benchmarks/peak.py); its decode workers are forked from it and
    # mostly share its pages, so adding their peaks (as this once did) counted those pages twice
    from peak import HWM

    cmd = [sys.executable, "-c", HWM +
           "from embedstore.ingest import build; "
           f"build({str(src)!r}, {str(store)!r}, encoder={encoder_id!r}, weights={weights!r}, progress=False); "
           "print(hwm())"]
    return float(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=400, help="the small source; the large one has 10x as many images")
    ap.add_argument("--encoder", default="effnet-lite:lite0")
    ap.add_argument("--build-args", default="", help="extra `embed build` options for every build, e.g. '--batch-size 64'")
    ap.add_argument("--no-large", action="store_true", help="skip the 10N build")
    ap.add_argument("--rss", type=int, default=0, help="also measure peak RSS at this N and 4N")
    ap.add_argument("--size", default="320x240", help="the generated JPEGs' size, WxH (e.g. 2048x1536 for phone-photo-sized files)")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()

    import torch

    from embedstore.embedding.device import cpu_has_native_bf16

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-build-"))
    work.mkdir(parents=True, exist_ok=True)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    print(f"machine: {os.cpu_count()} cores ({cpu}), native bf16 {cpu_has_native_bf16()}, GPU {gpu}; "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} at start")
    extra = shlex.split(args.build_args)
    w = random_weights(args.encoder, work)
    sizes = [args.n] + ([] if args.no_large else [10 * args.n])
    size = tuple(int(v) for v in args.size.lower().split("x"))
    srcs = {n: make_jpegs(work / f"jpegs{n}-{args.size}", n, size=size, seed=n) for n in sizes}

    # a model's first build converts it for the accelerated forward and caches the weights'
    # hash, and the first import reads the packages from disk: timed apart, so that the idle run
    # below is the steady state the loaded run is compared with
    first = whole_command(srcs[args.n], work / "bench.h5", args.encoder, w, extra)
    runs = [(f"idle, {args.n} images", whole_command(srcs[args.n], work / "bench.h5", args.encoder, w, extra))]
    r0 = runs[0][1]
    fwd_args = (args.encoder, w, max(256, 8 * r0["batch_size"]), r0["batch_size"], r0.get("encoder_threads", 0), r0["precision"],
                r0.get("accel", "none"))
    fwd = forward_only(*fwd_args)
    with Spinner():
        fwd_loaded = forward_only(*fwd_args)
    print(f"\n{args.encoder} on {args.size} JPEGs, precision {r0['precision']}, forward {r0.get('accel', 'none')}, batch {r0['batch_size']}, {r0['workers']} decode worker(s), "
          f"{r0.get('encoder_threads') or torch.get_num_threads()} encoder thread(s)")
    print(f"forward-only: {fwd:.1f} items/s idle, {fwd_loaded:.1f} with one core spinning\n")
    print(f"{'run':22} {'items':>6} {'command':>8} {'cmd/s':>7} {'loop/s':>7} {'fwd/s':>7} {'cmd/fwd':>6} {'loop/fwd':>6}")
    print(describe(f"warm-up, {args.n} images", first, fwd))
    print(describe(*runs[0], fwd), flush=True)
    for n in sizes[1:]:
        runs.append((f"idle, {n} images", whole_command(srcs[n], work / "bench.h5", args.encoder, w, extra)))
        print(describe(*runs[-1], fwd), flush=True)
    with Spinner():
        runs.append((f"+1 spinner, {args.n} images", whole_command(srcs[args.n], work / "bench.h5", args.encoder, w, extra)))
    print(describe(*runs[-1], fwd), flush=True)
    loaded = runs[-1][1]
    print(f"\nunder load / idle ({args.n} images, whole command): {loaded['command_items_s'] / r0['command_items_s']:.2f} "
          f"(target >= 0.4); loop only: {loaded['loop_items_per_s'] / r0['loop_items_per_s']:.2f}")
    for tag, r in runs:
        for a in r.get("advice", []):
            print(f"{tag}: {a}")

    if args.rss:
        n1, n4 = args.rss, 4 * args.rss
        src1, src4 = make_jpegs(work / f"jpegs{n1}", n1, seed=1), make_jpegs(work / f"jpegs{n4}", n4, seed=2)
        r1 = peak_rss_mb(src1, work / "rss1.h5", args.encoder, w)
        r4 = peak_rss_mb(src4, work / "rss4.h5", args.encoder, w)
        print(f"\npeak RSS ({args.encoder}, main + largest worker): N={n1}: {r1:.0f} MB, 4N={n4}: {r4:.0f} MB, ratio {r4 / r1:.2f}")


if __name__ == "__main__":
    main()
