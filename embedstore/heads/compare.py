"""`compare_encoders`: embed a seeded sample with each encoder, probe it, and recommend one."""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path

import numpy as np

from ..errors import EmbedstoreError, SourceError
from ..evaluation.paired import compare


def _dir_bytes(store: Path) -> int:
    side = store.with_name(store.name + ".d")
    return store.stat().st_size + sum(f.stat().st_size for f in side.rglob("*") if f.is_file())


def compare_encoders(source: str | Path, encoders: list[str], sample: int = 500, seed: int = 0, work: str | Path | None = None,
                     batch_size: int | None = None, device: str = "auto", progress: bool = True) -> dict:
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
    # the sample's split, checked as fit_head will make it, before any encoder runs: a class too small
    # to split is one error now, not the same error once per encoder after embedding with each
    from .splits import assign_splits

    order = sorted(range(len(items)), key=lambda k: items[k].id)
    try:
        assign_splits(np.array([items[k].label for k in order]), np.array([items[k].split or "" for k in order]), 0.15, 0.15, seed)
    except EmbedstoreError as e:  # the problem as fit-head words it; the fix in terms of the source compared here
        raise SourceError(f"{source} (a sample of {len(items)} labelled items): {str(e).split('; ')[0]}; add items to that "
                          "class or remove its rows from the source, then compare again") from None
    tmp = tempfile.TemporaryDirectory(prefix="embed-compare-")
    root = Path(work) if work else Path(tmp.name)
    root.mkdir(parents=True, exist_ok=True)
    manifest = root / "sample.csv"
    texts = src.kind == "text"  # a text sample is a table of the texts themselves; an image sample lists the files
    with open(manifest, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "text" if texts else "path", "label", "split"])
        for it in items:
            w.writerow([it.id, it.text if texts else it.uri, it.label, it.split or ""])
    rows, answers = [], {}
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
            truth = {i: t for i, t in zip(map(str, _ids(store)), _labels(store))}
            answers[eid] = (getattr(lp, "test_predictions", {}), truth)
            row.update(dim=_dim(store), items=b.vectors_in_set,
                       encode_items_per_s=b.encoded / b.encode_s if b.encode_s > 0 else None,
                       wall_items_per_s=b.items_per_s, store_mb=_dir_bytes(store) / 2**20,
                       linear_probe=lp.test["accuracy"], linear_probe_ci=lp.test["accuracy_ci"],
                       knn=kn.test["accuracy"], knn_ci=kn.test["accuracy_ci"], n_test=n_test,
                       train_per_class=lp.counts["train"] / max(1, len(lp.classes)), chosen_C=lp.chosen)
            rows.append(row)
    finally:
        tmp.cleanup()
    return {"source": str(source), "sample": len(items), "seed": seed, "results": rows, **recommend(rows, answers)}


def _ids(store: Path):
    from ..store import open_store

    with open_store(store) as st:
        return st.rows(st.select_set().name).ids


def _labels(store: Path):
    from ..store import open_store

    with open_store(store) as st:
        return [str(v) for v in st.rows(st.select_set().name).labels]


def _dim(store: Path) -> int:
    from ..store import open_store

    with open_store(store) as st:
        return st.select_set().dim


# the fewest paired items on which the exact two-sided McNemar test can reach p < 0.05 at all
# (every item discordant one way: p = 2 x 0.5^n, 0.031 at n = 6)
MIN_PAIRED = 6


def recommend(rows: list[dict], answers: dict | None = None) -> dict:
    """The most accurate encoder, unless a faster one is not significantly worse on the same test
    items (McNemar, paired); and whether fine-tuning is likely to pay. Every encoder's comparison
    with the most accurate one is kept in its row as `vs_best`."""
    ok = [r for r in rows if "error" not in r]
    if not ok:
        return {"recommended": None, "why": "no encoder could be run; see the errors", "finetune": None}
    # test encoders (test:..., seeded random weights that exist for the test suite) are measured but
    # recommended only when nothing else ran
    real = [r for r in ok if not str(r["encoder"]).startswith("test:")]
    testing = len(real) < len(ok)
    ok = real or ok
    best = max(ok, key=lambda r: r["linear_probe"])
    tied, too_few = [best], None
    for r in ok:
        if r is best or not answers or r["encoder"] not in answers or best["encoder"] not in answers:
            continue
        (pa, truth), (pb, _) = answers[r["encoder"]], answers[best["encoder"]]
        ids = [i for i in pa if i in pb]
        if 0 < len(ids) < MIN_PAIRED:  # no outcome on so few items could be significant: "no difference" says nothing
            too_few = len(ids)
            continue
        if ids:
            r["vs_best"] = compare(r["encoder"], best["encoder"], [truth[i] for i in ids], [pa[i] for i in ids],
                                   [pb[i] for i in ids])
            if r["vs_best"]["winner"] is None:
                tied.append(r)
    pick = max(tied, key=lambda r: (r["encode_items_per_s"] or 0))
    if too_few is not None and pick is best:
        why = (f"highest linear-probe accuracy ({best['linear_probe']:.3f}), but on only {too_few} test items, too few for a "
               f"paired test to tell the encoders apart (it needs at least {MIN_PAIRED}); a weak recommendation: compare on more "
               "labelled items (--sample, or a larger source)")
    elif pick is best:
        why = f"highest linear-probe accuracy ({best['linear_probe']:.3f})"
        others = [r["vs_best"]["verdict"] for r in ok if "vs_best" in r]
        if others:
            why += "; " + "; ".join(others)
    else:
        why = (f"{pick['vs_best']['verdict']}, and {pick['encoder']} is {pick['encode_items_per_s'] / max(best['encode_items_per_s'] or 1e-9, 1e-9):.1f}x "
               f"faster to embed, with {pick['dim']}-d vectors ({pick['store_mb']:.1f} MB store)")
    if testing and real:
        why += "; test encoders (test:..., seeded random weights for the test suite) are measured, never recommended"
    elif testing:
        why += "; only test encoders ran (test:..., seeded random weights for the test suite): compare real encoders"
    acc, per_class = pick["linear_probe"], pick["train_per_class"]
    if acc >= 0.98:
        ft = f"unlikely to pay: the frozen features already reach {acc:.3f}"
    elif per_class < 20:
        ft = f"uncertain: only {per_class:.0f} training items per class; more labels would pay first"
    else:
        ft = (f"likely to pay: accuracy {acc:.3f} leaves room and there are {per_class:.0f} training items per class; "
              f"try `embed finetune --unfreeze 2`")
    return {"recommended": pick["encoder"], "why": why, "finetune": ft}
