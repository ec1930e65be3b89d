"""End-to-end `embed build` throughput against the encoder's forward-only ceiling, and peak RSS.

For each encoder: build a store from N generated JPEGs (decode workers, background writes,
the same precision and batch size as the CLI defaults), then time the encoder's forward pass
alone on pre-made tensors in the same process settings. Their ratio says whether reading and
writing keep up with the model. Peak RSS is measured for N and 4N items in fresh processes.

    .venv/bin/python benchmarks/bench_build.py            # N=1000
    .venv/bin/python benchmarks/bench_build.py --n 200 --encoders test:tiny
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")


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
    """Offline, torchvision models run with random weights: speed does not depend on values."""
    if not encoder_id.startswith("torchvision:"):
        return None
    import torch
    import torchvision

    path = out / f"{encoder_id.split(':')[1]}.pth"
    if not path.exists():
        torch.save(torchvision.models.get_model(encoder_id.split(":")[1], weights=None).state_dict(), path)
    return str(path)


def forward_only(encoder_id: str, weights: str | None, n: int, batch_size: int) -> tuple[float, str]:
    """The encoder's own speed through the embedding service (forward, normalisation), no files."""
    from embedstore.embedding import EmbeddingService
    import torch

    svc = EmbeddingService.create(encoder_id, weights=weights).place()
    s = svc.cfg.preprocess.input_size
    x = torch.randn(batch_size, 3, s, s)
    svc.forward(x)  # warm-up
    if svc.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    done = 0
    while done < n:
        svc.forward(x)
        done += batch_size
    return done / (time.perf_counter() - t0), svc.precision


def end_to_end(src: Path, store: Path, encoder_id: str, weights: str | None, batch_size: int) -> dict:
    from embedstore.ingest import build

    for p in (store, store.with_name(store.name + ".d")):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    r = build(src, store, encoder=encoder_id, weights=weights, batch_size=batch_size, progress=False)
    loop = r.read_s + r.encode_s
    return {"wall_items_s": r.encoded / r.wall_s, "loop_items_s": r.encoded / loop, "read_s": r.read_s,
            "encode_s": r.encode_s, "write_s": r.write_s, "wall_s": r.wall_s, "workers": r.workers}


def peak_rss_mb(src: Path, store: Path, encoder_id: str, weights: str | None) -> float:
    cmd = [sys.executable, "-c",
           "import resource, sys; from embedstore.ingest import build; "
           f"build({str(src)!r}, {str(store)!r}, encoder={encoder_id!r}, weights={weights!r}, progress=False); "
           "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()[-1]
    return int(out) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--rss-n", type=int, default=250, help="N for the RSS check (4N is also run)")
    ap.add_argument("--encoders", default="test:tiny,effnet-lite:lite0,torchvision:resnet50")
    ap.add_argument("--rss-encoder", default="effnet-lite:lite0")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()

    import torch

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-build-"))
    print(f"machine: {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
          f"GPU: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}")
    src = make_jpegs(work / f"jpegs{args.n}", args.n)
    print(f"\n{'encoder':24} {'prec':5} {'e2e wall/s':>10} {'e2e loop/s':>10} {'fwd-only/s':>10} {'ratio wall':>10} {'ratio loop':>10}")
    for eid in args.encoders.split(","):
        w = random_weights(eid, work)
        e2e = end_to_end(src, work / "bench.h5", eid, w, args.batch_size)
        fwd, prec = forward_only(eid, w, args.n, args.batch_size)
        print(f"{eid:24} {prec:5} {e2e['wall_items_s']:10.1f} {e2e['loop_items_s']:10.1f} {fwd:10.1f} "
              f"{e2e['wall_items_s'] / fwd:10.2f} {e2e['loop_items_s'] / fwd:10.2f}   "
              f"(read-wait {e2e['read_s']:.1f}s, encode {e2e['encode_s']:.1f}s, write {e2e['write_s']:.1f}s, "
              f"wall {e2e['wall_s']:.1f}s, {e2e['workers']} workers)")

    n1, n4 = args.rss_n, 4 * args.rss_n
    w = random_weights(args.rss_encoder, work)
    src1, src4 = make_jpegs(work / f"jpegs{n1}", n1, seed=1), make_jpegs(work / f"jpegs{n4}", n4, seed=2)
    r1 = peak_rss_mb(src1, work / "rss1.h5", args.rss_encoder, w)
    r4 = peak_rss_mb(src4, work / "rss4.h5", args.rss_encoder, w)
    print(f"\npeak RSS ({args.rss_encoder}, main + largest worker): N={n1}: {r1:.0f} MB, 4N={n4}: {r4:.0f} MB, ratio {r4 / r1:.2f}")


if __name__ == "__main__":
    main()
