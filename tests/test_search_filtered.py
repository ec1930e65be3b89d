"""Filtered search is exact in what it returns: rows are selected before the index is searched, so
rare labels get their k hits on flat, IVF-Flat and IVF-PQ indexes alike (issue 16)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import embed

# its module-scoped stores are built once (scripts/test.sh: --dist loadgroup keeps the file on one worker)
pytestmark = pytest.mark.xdist_group("search_filtered")

N, DIM = 20000, 32
# label shares: a 0.1%, b 0.9%, c 9%, d 40%, e 50% -> filters at 0.1%, 1%, 10%, 50%
SHARES = {"a": 0.001, "b": 0.009, "c": 0.09, "d": 0.40, "e": 0.50}
FILTERS = {0.001: "label=a", 0.01: "label=a|b", 0.10: "label=a|b|c", 0.50: "label=a|b|c|d"}


def labelled_store(path, n=N, dim=DIM, seed=0):
    """Clustered unit vectors whose labels are independent of the clusters (a filter cuts across them)."""
    from embedstore.store import ItemRows, open_store

    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(30, dim))
    X = centers[rng.integers(0, 30, n)] + 0.7 * rng.normal(size=(n, dim))
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float16)
    cut = np.cumsum([int(round(s * n)) for s in SHARES.values()])
    labels = np.empty(n, dtype=object)
    perm = rng.permutation(n)
    for lab, a, b in zip(SHARES, np.r_[0, cut[:-1]], cut):
        labels[perm[a:b]] = lab
    attrs = {"encoder": "synthetic", "dim": dim, "dtype": "float16", "normalize": "l2", "modality": "image"}
    with open_store(path, mode="a", create=True) as st:
        for part in np.array_split(np.arange(n), 4):
            items = ItemRows()
            ids = [f"v{i:06d}" for i in part]
            for i, j in zip(ids, part):
                items.append(id=i, uri=f"/data/{i}.jpg", sha256=i, status="ok", label=labels[j])
            st.commit("synthetic-0000", attrs, items, ids, ids, X[part], {})
        st.refresh(index=True)
    return X.astype(np.float32), labels


@pytest.fixture(scope="session", params=["flat", "ivfflat", "ivfpq"])
def store(request, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    if request.param != "flat":
        mp.setenv("EMBEDSTORE_EXACT_MAX", "1000")
    mp.setenv("EMBEDSTORE_PQ_MIN", "5000" if request.param == "ivfpq" else "100000000")
    path = tmp_path_factory.mktemp(request.param) / "s.h5"
    X, labels = labelled_store(path)
    mp.undo()
    return request.param, path, X, labels


@pytest.mark.parametrize("selectivity", sorted(FILTERS))
def test_filtered_recall_matches_brute_force_on_the_subset(store, selectivity):
    from embedstore.search.query import SearchContext

    kind, path, X, labels = store
    ctx = SearchContext(path)
    assert ctx.index.kind == kind
    where = FILTERS[selectivity]
    allowed = np.isin(labels, where.split("=")[1].split("|"))
    assert abs(allowed.mean() - selectivity) < 1e-3
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, N, 40), rng.integers(0, N, 40)
    Q = np.concatenate([X[rng.integers(0, N, 40)], (X[a] + X[b]) / 2])  # stored vectors and midpoints
    Q /= np.linalg.norm(Q, axis=1, keepdims=True)
    hits, plan, _ = ctx.run_batch(Q, 10, where)
    sub = np.flatnonzero(allowed)
    truth = sub[np.argsort(-(X[sub] @ Q.T), axis=0)[:10].T]
    ids = np.array([f"v{i:06d}" for i in range(N)])
    recall = np.mean([len({h["id"] for h in hs} & set(ids[t])) / 10 for hs, t in zip(hits, truth)])
    assert all(len(hs) == 10 for hs in hits) and plan["complete"]
    assert all(h["label"] in where.split("=")[1].split("|") for hs in hits for h in hs)
    assert recall >= 0.99, (kind, selectivity, recall, plan)
    if kind == "ivfflat":  # these float16 vectors get SQfp16 lists, and the plan names them
        assert ctx.index.meta["type"] == "IVFSQfp16" and "IVF-Flat" not in plan["method"]
        assert plan["method"].startswith("IVF-SQfp16 nprobe") or plan["method"].startswith("exact"), plan["method"]


def test_where_globs_on_id(store):
    kind, path, X, labels = store
    import json

    r = embed("search", path, "--id", "v000010", "-k", 5, "--where", "id=v0001*", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert len(out["hits"]) == 5 and all(h["id"].startswith("v0001") for h in out["hits"])
    assert out["plan"]["selected"] == 100  # v000100 .. v000199


@pytest.mark.parametrize("selectivity", [0.01, 0.5])
def test_ivfpq_widens_the_probe_when_the_selected_rows_are_too_many_to_scan(store, selectivity, monkeypatch):
    """IVF-PQ with the selected rows over the in-memory budget: probes widened, candidates re-ranked."""
    import embedstore.search.index as si
    from embedstore.search.query import SearchContext

    kind, path, X, labels = store
    if kind != "ivfpq":
        pytest.skip("IVF-PQ only")
    monkeypatch.setattr(si, "SUBSET_BYTES", 0)
    where = FILTERS[selectivity]
    sub = np.flatnonzero(np.isin(labels, where.split("=")[1].split("|")))
    Q = X[np.random.default_rng(2).integers(0, N, 50)]
    hits, plan, _ = SearchContext(path).run_batch(Q, 10, where)
    assert "IVF-PQ nprobe" in plan["method"] and "re-ranked" in plan["method"]
    truth = sub[np.argsort(-(X[sub] @ Q.T), axis=0)[:10].T]
    recall = np.mean([len({h["id"] for h in hs} & {f"v{i:06d}" for i in t}) / 10 for hs, t in zip(hits, truth)])
    assert recall >= 0.99, (recall, plan)
