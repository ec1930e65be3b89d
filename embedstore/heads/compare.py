"""`compare_encoders`: embed a seeded sample with each encoder, probe it, and recommend one."""

from __future__ import annotations

import csv
import math
import tempfile
from pathlib import Path

import numpy as np

from ..errors import EmbedstoreError, SourceError


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of an accuracy p measured on n items."""
    if n == 0:
        return 0.0, 1.0
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def _dir_bytes(store: Path) -> int:
    side = store.with_name(store.name + ".d")
    return store.stat().st_size + sum(f.stat().st_size for f in side.rglob("*") if f.is_file())


def compare_encoders(source: str | Path, encoders: list[str], sample: int = 500, seed: int = 0, work: str | Path | None = None,
                     batch_size: int = 64, device: str = "auto", progress: bool = True) -> dict:
    from ..ingest import build
    from ..sources import open_source
    from .fit import fit_head

    if not encoders:
        raise SourceError("--encoders names no encoder; give a comma-separated list, e.g. effnet-lite:lite0,torchvision:resnet50")
    src = open_source(source)
    items = [it for it in src.items if it.label]
    if len({it.label for it in items}) < 2:
        raise SourceError(f"{source} has fewer than two labelled classes; compare-encoders needs labels to probe accuracy")
    rng = np.random.default_rng(seed)
    if len(items) > sample:
        items = [items[i] for i in sorted(rng.choice(len(items), sample, replace=False))]
    tmp = tempfile.TemporaryDirectory(prefix="embed-compare-")
    root = Path(work) if work else Path(tmp.name)
    root.mkdir(parents=True, exist_ok=True)
    manifest = root / "sample.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "path", "label", "split"])
        for it in items:
            w.writerow([it.id, it.uri, it.label, it.split or ""])
    rows = []
    try:
        for eid in encoders:
            row = {"encoder": eid}
            store = root / (eid.replace(":", "_").replace("/", "_") + ".h5")
            try:
                b = build(manifest, store, encoder=eid, batch_size=batch_size, device=device, progress=progress)
                lp, _ = fit_head(store, "logistic", seed=seed, progress=False)
                kn, _ = fit_head(store, "knn", seed=seed, progress=False)
            except EmbedstoreError as e:
                row["error"] = str(e)
                rows.append(row)
                continue
            n_test = lp.counts["test"]
            row.update(dim=_dim(store), items=b.vectors_in_set,
                       encode_items_per_s=b.encoded / b.encode_s if b.encode_s > 0 else None,
                       wall_items_per_s=b.items_per_s, store_mb=_dir_bytes(store) / 2**20,
                       linear_probe=lp.test["accuracy"], linear_probe_ci=wilson(lp.test["accuracy"], n_test),
                       knn=kn.test["accuracy"], knn_ci=wilson(kn.test["accuracy"], n_test), n_test=n_test,
                       train_per_class=lp.counts["train"] / max(1, len(lp.classes)), chosen_C=lp.chosen)
            rows.append(row)
    finally:
        tmp.cleanup()
    return {"source": str(source), "sample": len(items), "seed": seed, "results": rows, **recommend(rows)}


def _dim(store: Path) -> int:
    from ..store import open_store

    with open_store(store) as st:
        return st.select_set().dim


def recommend(rows: list[dict]) -> dict:
    """The most accurate encoder, unless a faster one is statistically as good (its 95% interval
    reaches the best accuracy); and whether fine-tuning is likely to pay."""
    ok = [r for r in rows if "error" not in r]
    if not ok:
        return {"recommended": None, "why": "no encoder could be run; see the errors", "finetune": None}
    best = max(ok, key=lambda r: r["linear_probe"])
    tied = [r for r in ok if r is best or r["linear_probe_ci"][1] >= best["linear_probe"] - 1e-9]
    pick = max(tied, key=lambda r: (r["encode_items_per_s"] or 0))
    if pick is best:
        why = (f"highest linear-probe accuracy ({best['linear_probe']:.3f})"
               + ("; no faster encoder is statistically as good" if len(ok) > 1 else ""))
    else:
        why = (f"as accurate as the best ({pick['linear_probe']:.3f} vs {best['encoder']} {best['linear_probe']:.3f}, "
               f"inside the 95% interval) and {pick['encode_items_per_s'] / max(best['encode_items_per_s'] or 1e-9, 1e-9):.1f}x "
               f"faster to embed, with {pick['dim']}-d vectors ({pick['store_mb']:.1f} MB store)")
    acc, per_class = pick["linear_probe"], pick["train_per_class"]
    if acc >= 0.98:
        ft = f"unlikely to pay: the frozen features already reach {acc:.3f}"
    elif per_class < 20:
        ft = f"uncertain: only {per_class:.0f} training items per class; more labels would pay first"
    else:
        ft = (f"likely to pay: accuracy {acc:.3f} leaves room and there are {per_class:.0f} training items per class; "
              f"try `embed finetune --unfreeze 2`")
    return {"recommended": pick["encoder"], "why": why, "finetune": ft}
