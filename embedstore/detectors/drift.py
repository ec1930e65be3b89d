"""`drift`: how far two vector sets of the same items moved apart (e.g. before and after fine-tuning)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import StoreError


def drift(store: str | Path, set_from: str, set_to: str, sample: int = 5000, k: int = 10, seed: int = 0) -> dict:
    """Mean cosine between each item's two vectors (same dimension only) and kNN overlap@k: the
    share of an item's k nearest neighbours (among the common items) that both sets agree on, with
    the share two unrelated neighbourhoods would give by chance (k / (items - 1)) beside it."""
    from ..search.index import SearchIndex, normalise
    from ..store import open_store

    with open_store(store) as st:
        a, b = st.select_set(set_from), st.select_set(set_to)
        if a.name == b.name:
            raise StoreError(f"--from and --to name the same vector set ({a.name}); pick two different sets (see `embed info`)")
        ra, rb = st.rows(a.name), st.rows(b.name)
    common = np.intersect1d(ra.ids, rb.ids)
    rng = np.random.default_rng(seed)
    shared = len(common)
    if len(common) > sample:
        common = np.sort(rng.choice(common, sample, replace=False))
    # with k >= items - 1 every item's neighbours are all the others in both sets: overlap 1 by construction
    if len(common) < k + 2:
        raise StoreError(f"{a.name} and {b.name} are compared on {len(common)} items"
                         + (f" (--sample {sample} of the {shared} they share)" if shared > len(common) else " (all they share)")
                         + f"; kNN overlap@{k} needs at least k + 2 = {k + 2}, or every item's neighbours are all the others"
                         + ("; raise --sample or lower -k" if shared >= k + 2 else "; lower -k"))
    pa = {i: n for n, i in enumerate(ra.ids)}
    pb = {i: n for n, i in enumerate(rb.ids)}
    ia = np.array([pa[i] for i in common])
    ib = np.array([pb[i] for i in common])
    Xa = ra.load_at(ia)
    Xb = rb.load_at(ib)
    out = {"from": a.name, "to": b.name, "from_encoder": a.encoder, "to_encoder": b.encoder, "items": int(len(common)),
           "shared_items": int(shared), "k": k, "knn_overlap_chance": k / (len(common) - 1)}
    Na, Nb = normalise(Xa), normalise(Xb)
    if Xa.shape[1] == Xb.shape[1]:
        cos = (Na * Nb).sum(1)
        out.update(mean_cosine=float(cos.mean()), mean_cosine_shift=float(1 - cos.mean()),
                   cosine_p05=float(np.quantile(cos, 0.05)))
    else:
        out["mean_cosine"] = None
        out["note"] = f"dimensions differ ({Xa.shape[1]} vs {Xb.shape[1]}): only the neighbourhood overlap is comparable"
    overlaps = []
    for N in (Na, Nb):
        I = SearchIndex.from_vectors(N, "inner_product").search(N, k + 1).R
        overlaps.append([set(row[row != n][:k]) for n, row in enumerate(I)])
    ov = np.array([len(x & y) / k for x, y in zip(*overlaps)])
    out.update(knn_overlap=float(ov.mean()), knn_overlap_p05=float(np.quantile(ov, 0.05)))
    return out

