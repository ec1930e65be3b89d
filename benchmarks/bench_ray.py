"""`embed build --engine ray` on a local Ray instance against the single-process build, same data.

Both builds embed the same N generated JPEGs with the same encoder, precision and batch size into
fresh stores; items/s is encoded items over the build's wall time (model load and index included
on both sides). The Ray instance is started before timing, as a user's cluster is already up.
The overhead ratio is Ray items/s over single-process items/s (goal: at least 0.9 on one GPU).
The two stores are also compared: same ids, vectors within 1e-3.

    .venv/bin/python benchmarks/bench_ray.py                       # N=1000, effnet-lite:lite0
    .venv/bin/python benchmarks/bench_ray.py --n 5000 --encoder torchvision:resnet50 --device cuda
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_build import make_jpegs, random_weights  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")


def vectors(path: Path) -> dict:
    from embedstore.store import open_store

    with open_store(path) as st:
        out = {}
        for ids, block in st.iter_vectors(st.select_set().name):
            out.update(zip(ids, block))
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--encoder", default="effnet-lite:lite0")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--work", type=Path, default=None, help="folder for images and stores [a temporary one]")
    args = ap.parse_args()

    import ray
    import torch

    from embedstore.ingest import build

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-ray-"))
    src = make_jpegs(work / "images", args.n)
    weights = random_weights(args.encoder, work)
    gpus = torch.cuda.device_count()
    print(f"machine: {os.cpu_count()} cores, {gpus} GPU(s) {torch.cuda.get_device_name(0) if gpus else ''}, "
          f"torch {torch.__version__}, ray {ray.__version__}; N={args.n} 320x240 JPEGs, {args.encoder}, batch {args.batch_size}")
    t0 = time.perf_counter()
    ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    print(f"ray.init (not timed below): {time.perf_counter() - t0:.1f} s, resources {ray.cluster_resources()}")

    common = dict(encoder=args.encoder, weights=weights, device=args.device, batch_size=args.batch_size, progress=False)
    rows = []
    for engine in ("local", "ray"):
        store = work / f"{engine}.h5"
        t0 = time.perf_counter()
        r = build(src, store, engine=engine, **common)
        wall = time.perf_counter() - t0
        rows.append((engine, r, wall))
        extra = f"{r.cluster['actors']} actor(s) on {r.cluster['actor_device']}" if engine == "ray" else f"{r.workers} decode workers"
        print(f"{engine:>6}: {r.encoded} items in {wall:6.1f} s = {r.encoded / wall:7.1f} items/s "
              f"({r.device}, {r.precision}, {extra}; read {r.read_s:.1f} s, encode {r.encode_s:.1f} s, write {r.write_s:.1f} s)")
    (_, _, t_local), (_, _, t_ray) = rows
    print(f"overhead ratio (ray items/s / single-process items/s): {t_local / t_ray:.2f}   (goal >= 0.9 on one GPU)")
    a, b = vectors(work / "local.h5"), vectors(work / "ray.h5")
    worst = max(float(np.abs(a[k] - b[k]).max()) for k in a) if sorted(a) == sorted(b) else float("inf")
    print(f"stores: {len(a)} and {len(b)} vectors, same ids: {sorted(a) == sorted(b)}, max |difference| {worst:.2e}")
    ray.shutdown()


if __name__ == "__main__":
    main()
