"""`embed export` against a plain h5py copy, as ratios measured in one run.

Two synthetic stores (N/4 and N rows of float16 unit vectors, d=512 by default, committed in
shards of `--part` rows as a build commits them, with ids, labels, splits and uris like a real
image folder's). Each command runs in its own child process, so its peak RSS is its own:
  - export --format npy of each store: rows/s and peak RSS (flat: the N-row peak / the N/4 one);
  - a plain h5py copy of the N-row store's vectors (read the dataset, np.save it): rows/s.
Throughput ratio = plain copy time / export time (issue 16: >= 0.8); also printed against the copy
plus an fsync of its file, since export fsyncs what it writes before renaming it into place.

    .venv/bin/python benchmarks/bench_export.py --n 400000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from peak import HWM  # the child's own peak RSS (benchmarks/peak.py)
from synthetic import commit_rows  # rows like a real image folder's (benchmarks/synthetic.py)


def make_store(path: Path, n: int, dim: int, part: int, seed: int = 0) -> None:
    """A store of `n` rows written shard by shard (never all vectors in memory)."""
    from embedstore.store import open_store

    with open_store(path, mode="a", create=True) as st:
        commit_rows(st, 0, n, part, dim, np.random.default_rng(seed))
        st.refresh(index=False)  # export needs the catalog, not a FAISS index


def child(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", HWM + code, *args], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


# Both children load their libraries before the clock starts (the copy: h5py and numpy; export: those,
# pyarrow and embedstore's store modules), so the ratio compares the work; the load is printed apart.
EXPORT = ("import json, sys, time; t=time.perf_counter(); import h5py, pyarrow.parquet; "
          "from embedstore.exchange.export import export; from embedstore.store import open_store, rowtext; "
          "from embedstore.progress import progress_bar; from embedstore.atomic import atomic_path; "
          "load=time.perf_counter()-t; t=time.perf_counter(); "
          "r=export(sys.argv[1], sys.argv[2], progress=False); "
          "print(json.dumps({'s': time.perf_counter()-t, 'load_s': load, 'rss_mb': hwm(), 'rows': r.rows}))")
COPY = ("import json, os, sys, time, h5py, numpy as np; t=time.perf_counter(); f=h5py.File(sys.argv[1]); "
        "ds=f['vectors'][list(f['vectors'])[0]]['vectors']; np.save(sys.argv[2], ds[()]); "
        "s=time.perf_counter()-t; fd=os.open(sys.argv[2], os.O_RDONLY); os.fsync(fd); os.close(fd); "
        "print(json.dumps({'s': s, 's_synced': time.perf_counter()-t, 'rss_mb': hwm()}))")
BASE = "import json; print(json.dumps({'rss_mb': hwm()}))"  # the interpreter alone


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=400_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--part", type=int, default=16384, help="rows per shard")
    ap.add_argument("--repeat", type=int, default=2, help="timed runs of each command (the best counts)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-export-"))
    try:
        print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; n={args.n} dim={args.dim} part={args.part}")
        t0 = time.perf_counter()
        sizes = (args.n // 4, args.n)
        for n in sizes:
            make_store(work / f"s{n}.h5", n, args.dim, args.part)
        print(f"stores written in {time.perf_counter() - t0:.1f}s")
        res = {}
        for n in sizes:
            runs = []
            for k in range(args.repeat):
                runs.append(child(EXPORT, str(work / f"s{n}.h5"), str(work / f"x{n}-{k}")))
                shutil.rmtree(work / f"x{n}-{k}")
            res[n] = min(runs, key=lambda r: r["s"]) | {"rss_mb": max(r["rss_mb"] for r in runs)}
        cps = []
        for k in range(args.repeat):
            cps.append(child(COPY, str(work / f"s{args.n}.h5"), str(work / "copy.npy")))
            os.unlink(work / "copy.npy")
        cp = min(cps, key=lambda r: r["s"])
        base = child(BASE)["rss_mb"]
        small, big = res[sizes[0]], res[sizes[1]]
        print(f"export npy {sizes[1]} rows: {big['s']:.2f}s ({big['rows'] / big['s']:.0f} rows/s); "
              f"plain h5py->np.save: {cp['s']:.2f}s ({args.n / cp['s']:.0f} rows/s); "
              f"throughput ratio {cp['s'] / big['s']:.2f} (target >= 0.8); against the copy made durable as export "
              f"makes its files (fsync, {cp['s_synced']:.2f}s): {cp['s_synced'] / big['s']:.2f}; "
              f"export's libraries load in {big['load_s']:.2f}s before it (not in the ratios)")
        print(f"export peak RSS: {small['rss_mb']:.0f} MB at {sizes[0]} rows, {big['rss_mb']:.0f} MB at {sizes[1]} rows "
              f"(x{big['rss_mb'] / small['rss_mb']:.2f} for x4 rows; the interpreter alone {base:.0f} MB; "
              f"the plain copy {cp['rss_mb']:.0f} MB)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
