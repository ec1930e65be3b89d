"""timm encoders on CPU: end-to-end `embed build` throughput against the encoder's forward-only
ceiling, for one CNN and one ViT (random weights saved as --weights: speed does not depend on values).

    .venv/bin/python benchmarks/bench_timm.py                      # N=256, resnet50 and vit_small_patch16_224
    .venv/bin/python benchmarks/bench_timm.py --n 128 --models resnet18
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

from bench_build import end_to_end, forward_only, make_jpegs  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--models", default="resnet50,vit_small_patch16_224")
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    import timm
    import torch
    from safetensors.torch import save_file

    work = Path(tempfile.mkdtemp(prefix="bench-timm-"))
    src = make_jpegs(work / "jpegs", args.n)
    rows = []
    for name in args.models.split(","):
        w = work / f"{name}.safetensors"
        save_file(timm.create_model(name, pretrained=False).state_dict(), str(w))
        eid = f"timm:{name}"
        fwd, precision = forward_only(eid, str(w), args.n, args.batch_size)
        e2e = end_to_end(src, work / f"{name}.h5", eid, str(w), args.batch_size)
        rows.append({"encoder": eid, "precision": precision, "forward_items_s": round(fwd, 1),
                     "build_items_s": round(e2e["wall_items_s"], 1), "ratio": round(e2e["wall_items_s"] / fwd, 2),
                     "workers": e2e["workers"], "threads": torch.get_num_threads()})
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
