"""Load test of `embed serve`: N concurrent clients for T seconds against search and thumbnails,
on loopback only (127.0.0.1; the server is started here as a subprocess of `embed serve`).

Each client holds one keep-alive connection and loops: GET /api/search?id=<random item>&k=10,
then GET /api/thumb/<random item>?size=<random 64..256>. Reported: requests answered, any
request not answered with 200 (status or error), p50/p99/max latency per route, requests per
second, and the server process's peak RSS (sampled every 50 ms with psutil).

    .venv/bin/python benchmarks/bench_serve.py                       # 200 clients, 30 s, 300 images
    .venv/bin/python benchmarks/bench_serve.py --clients 50 --seconds 10 --images 100
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HOST = "127.0.0.1"  # loopback only, by design


def make_store(root: Path, n: int) -> Path:
    from PIL import Image

    from embedstore.ingest import build

    rng = np.random.default_rng(0)
    colours = {"red": (200, 60, 40), "green": (40, 160, 60), "blue": (50, 60, 200)}
    for i in range(n):
        label = list(colours)[i % 3]
        w, h = int(rng.integers(400, 1600)), int(rng.integers(300, 1200))  # photo-sized files: real decode work
        base = np.array(colours[label], np.float32)
        arr = np.clip(base + rng.normal(0, 40, (h // 8, w // 8, 3)), 0, 255).astype(np.uint8)
        img = Image.fromarray(arr).resize((w, h))
        d = root / "photos" / label
        d.mkdir(parents=True, exist_ok=True)
        img.save(d / f"{label}_{i:04d}.{'jpg' if i % 2 else 'png'}")
    build(root / "photos", root / "s.h5", encoder="test:tiny", workers=0, precision="fp32", progress=False)
    return root / "s.h5"


def start_server(store: Path, max_connections: int):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen([sys.executable, "-m", "embedstore.cli.main", "serve", str(store), "--host", HOST, "--port", "0",
                          "--max-connections", str(max_connections)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        m = re.search(r"on http://127\.0\.0\.1:(\d+)/", line or "")
        if m:
            threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()  # keep the pipe drained
            return p, int(m.group(1))
        if not line and p.poll() is not None:
            break
    p.kill()
    raise SystemExit("embed serve did not start")


async def client(port: int, ids: list, until: float, out: dict, rng: random.Random):
    reader = writer = None
    while time.monotonic() < until:
        for route in ("search", "thumb"):
            item = rng.choice(ids)
            path = (f"/api/search?id={item}&k=10" if route == "search" else f"/api/thumb/{item}?size={rng.randrange(64, 257, 16)}")
            t0 = time.perf_counter()
            try:
                if writer is None:
                    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 60)
                writer.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode())
                await writer.drain()
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
                status = int(head.split(b" ", 2)[1])
                n = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))
                await asyncio.wait_for(reader.readexactly(n), 60)
                if re.search(rb"connection: close", head, re.I):
                    writer.close()
                    writer = None
            except Exception as e:  # noqa: BLE001 - every failure is counted and reported
                status = type(e).__name__
                if writer is not None:
                    writer.close()
                writer = None
            out[route].append(time.perf_counter() - t0)
            if status != 200:
                out["failed"].append((route, status))
    if writer is not None:
        writer.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=200, help="concurrent clients (1..1000)")
    ap.add_argument("--seconds", type=float, default=30.0, help="duration (1..600)")
    ap.add_argument("--images", type=int, default=300, help="items in the synthetic store")
    a = ap.parse_args()
    if not (1 <= a.clients <= 1000 and 1 <= a.seconds <= 600 and 3 <= a.images <= 5000):
        raise SystemExit("--clients 1..1000, --seconds 1..600, --images 3..5000")
    import psutil

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        store = make_store(Path(tmp), a.images)
        print(f"store: {a.images} images (400..1600 px, JPEG and PNG), built in {time.perf_counter() - t0:.1f} s")
        from embedstore.store import open_store

        with open_store(store) as st:
            ids = [str(i) for i in st.rows(st.select_set().name).ids]
        p, port = start_server(store, max(1000, a.clients + 10))
        proc = psutil.Process(p.pid)
        rss = [proc.memory_info().rss]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                rss.append(proc.memory_info().rss)
                time.sleep(0.05)

        threading.Thread(target=sample, daemon=True).start()
        out = {"search": [], "thumb": [], "failed": []}
        try:
            until = time.monotonic() + a.seconds

            async def run():
                await asyncio.gather(*(client(port, ids, until, out, random.Random(i)) for i in range(a.clients)))

            t0 = time.perf_counter()
            asyncio.run(run())
            wall = time.perf_counter() - t0
        finally:
            stop.set()
            p.terminate()
            p.wait(20)
    total = len(out["search"]) + len(out["thumb"])
    print(f"{a.clients} clients x {a.seconds:g} s on loopback: {total} requests in {wall:.1f} s ({total / wall:.0f}/s), "
          f"{total - len(out['failed'])} answered 200, {len(out['failed'])} not")
    for route in ("search", "thumb"):
        ms = np.array(out[route]) * 1000
        if len(ms):
            print(f"  {route:6s} n={len(ms):6d}  p50 {np.percentile(ms, 50):7.1f} ms  p99 {np.percentile(ms, 99):7.1f} ms  "
                  f"max {ms.max():7.1f} ms")
    if out["failed"]:
        kinds = {}
        for r, s in out["failed"]:
            kinds[(r, s)] = kinds.get((r, s), 0) + 1
        print("  not answered 200:", kinds)
    print(f"  server RSS: start {rss[0] / 2**20:.0f} MB, peak {max(rss) / 2**20:.0f} MB")
    if out["failed"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
