"""A catalog update during a build: appending the new rows (store/segments.py) against rewriting
the catalog whole, on stores of N/4 and N rows, as ratios measured in one run.

Each store is written shard by shard as a build commits (ids, labels, splits and uris like a real
image folder's; d=64 float16), its catalog written whole. Then, on each, `--add` new rows are
committed and the catalog brought up to date twice, from two copies of the same store:
  - `Store.append_catalog()` (what a build of new items does every 30 s);
  - `Store.refresh(index=False)` (the whole rewrite, what every update did before, and what a build
    that changes stored items still does).
Printed: seconds for each, and how each grows from the N/4 store to the N one (issue 17: an
update's cost must not grow with the store; the whole rewrite's grows with it).

    .venv/bin/python benchmarks/bench_catalog.py --n 800000 --add 20000
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from synthetic import commit_rows  # rows like a real image folder's (benchmarks/synthetic.py)

def make_store(path: Path, n: int, part: int) -> None:
    from embedstore.store import open_store

    with open_store(path, mode="a", create=True) as st:
        commit_rows(st, 0, n, part, 64, np.random.default_rng(0))
        st.refresh(index=False)


def copy_store(src: Path, dst: Path) -> Path:
    shutil.copy(src, dst)
    shutil.copytree(src.with_name(src.name + ".d"), dst.with_name(dst.name + ".d"))
    return dst


def timed_update(store: Path, n: int, add: int, part: int, how: str) -> float:
    """Commit `add` new rows to the store, then time the catalog update alone."""
    from embedstore.store import open_store

    with open_store(store, mode="a") as st:  # a renamed copy: its catalog is rewritten on open, outside the clock
        commit_rows(st, n, n + add, part, 64, np.random.default_rng(1))
        t = time.perf_counter()
        if how == "append":
            assert st.append_catalog(), "the catalog could not be appended to"
        else:
            st.refresh(index=False)
        took = time.perf_counter() - t
        assert st.select_set().count == n + add
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=800_000, help="rows of the larger store (the smaller has n/4)")
    ap.add_argument("--add", type=int, default=20_000, help="rows committed before the timed update")
    ap.add_argument("--part", type=int, default=4096, help="rows per shard, as a build commits them")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-catalog-"))
    try:
        out = {}
        for n in (args.n // 4, args.n):
            base = root / f"base{n}.h5"
            t = time.perf_counter()
            make_store(base, n, args.part)
            print(f"store of {n} rows written in {time.perf_counter() - t:.1f} s")
            out[n] = {how: timed_update(copy_store(base, root / f"{how}{n}.h5"), n, args.add, args.part, how)
                      for how in ("append", "whole")}
            print(f"  +{args.add} rows: append {out[n]['append']:.2f} s, whole rewrite {out[n]['whole']:.2f} s "
                  f"({out[n]['whole'] / out[n]['append']:.1f}x)")
        small, big = out[args.n // 4], out[args.n]
        print(f"from {args.n // 4} to {args.n} rows (x4): append x{big['append'] / small['append']:.2f}, "
              f"whole rewrite x{big['whole'] / small['whole']:.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
