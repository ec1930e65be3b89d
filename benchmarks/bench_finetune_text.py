"""Drug reviews with the bundled MiniLM on CPU: frozen linear probe against fine-tuning the last
transformer layers, accuracy and balanced accuracy with intervals, paired on the same test items.

    .venv/bin/python benchmarks/bench_finetune_text.py                       # --unfreeze 2 --epochs 3, balanced
    .venv/bin/python benchmarks/bench_finetune_text.py --class-weight none --epochs 2
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--unfreeze", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--backbone-lr-mult", type=float, default=0.05)
    ap.add_argument("--class-weight", default="balanced")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()

    from embedstore.datasets import write_drug_reviews
    from embedstore.finetune.loop import Recipe
    from embedstore.finetune.run import finetune
    from embedstore.ingest import build

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-ft-text-"))
    csv_path = write_drug_reviews(work / "reviews.csv")
    store = work / "reviews.h5"
    t0 = time.perf_counter()
    b = build(csv_path, store, encoder="st:all-MiniLM-L6-v2", progress=False)
    build_s = time.perf_counter() - t0
    recipe = Recipe(unfreeze=args.unfreeze, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                    backbone_lr_mult=args.backbone_lr_mult, augment=False, class_weight=args.class_weight)
    t0 = time.perf_counter()
    r = finetune(store, work / "ft", recipe=recipe, overwrite=True, progress=False)
    ft_s = time.perf_counter() - t0
    out = {"threads": __import__("torch").get_num_threads(), "items": b.encoded, "build_s": round(build_s, 1),
           "finetune_s": round(ft_s, 1), "counts": r.counts, "recipe": r.recipe, "history": r.history,
           "best_epoch": r.best_epoch, "before": r.before, "after": r.after, "comparisons": r.comparisons}
    print(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
