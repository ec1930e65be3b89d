"""Queries run at the precision a vector set was built at, not at what `--precision auto` means here.

A set built with `--precision fp32` on a CPU with native bf16 used to be queried at bf16 (cosine
~0.9994 with its own stored vector for EfficientNet-Lite0, instead of ~1.0). The build records the
precision in the set's attributes (`build_precision`, not in the set's key or name) and
`EmbeddingService.from_provenance` runs at it. The bf16 check is forced on, so these tests mean the
same on a CPU without native bf16 (bf16 autocast then runs emulated)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import embed, make_image_folder

ENCODER = "effnet-lite:lite0"  # real ImageNet weights: bf16 moves its vectors (the tiny test encoder barely)
COS_MIN = 0.9999


@pytest.fixture
def bf16_cpu(monkeypatch):
    """`--precision auto` picks bf16 on this CPU, as on one with native bf16."""
    from embedstore.embedding import device

    monkeypatch.delenv("EMBEDSTORE_CPU_BF16", raising=False)
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)


@pytest.fixture(scope="module")
def fp32_store(tmp_path_factory):
    from embedstore.ingest import build

    root = tmp_path_factory.mktemp("qprec")
    photos = make_image_folder(root / "photos", classes=("cat", "owl"), per_class=2, size=(56, 44))
    build(photos, root / "s.h5", encoder=ENCODER, precision="fp32", workers=0, progress=False, batch_size=4)
    return root, photos


def stored_set(store):
    from embedstore.store import open_store

    with open_store(store) as st:
        vs = st.select_set()
        rows = st.rows(vs.name)
        return vs, dict(zip(map(str, rows.ids), rows.load(np.ones(len(rows), dtype=bool))))


def cos(a, b) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_build_records_precision_outside_the_set_key(fp32_store, tmp_path, bf16_cpu):
    from embedstore.ingest import build

    root, photos = fp32_store
    vs, _ = stored_set(root / "s.h5")
    assert vs.attrs["build_precision"] == "fp32"
    # auto on a bf16 CPU without the openvino path (with it, auto computes exact fp32: test_accel.py)
    bf = build(photos, tmp_path / "bf16.h5", encoder=ENCODER, workers=0, progress=False, batch_size=4, accel="none")
    assert bf.precision == "bf16"
    vs_bf, _ = stored_set(tmp_path / "bf16.h5")
    assert vs_bf.attrs["build_precision"] == "bf16" and vs_bf.name == vs.name  # same key, same name


def test_service_queries_at_the_recorded_precision(fp32_store, bf16_cpu):
    from embedstore.embedding.service import EmbeddingService

    root, photos = fp32_store
    vs, vecs = stored_set(root / "s.h5")
    recorded = {**vs.provenance, "build_precision": vs.attrs["build_precision"]}
    svc = EmbeddingService.from_provenance(recorded)
    assert svc.precision == "fp32" and "built at fp32" in svc.precision_reason
    assert vs.provenance["build_precision"] == "fp32"  # the store hands it to every door
    before = {k: v for k, v in vs.provenance.items() if k != "build_precision"}
    old = EmbeddingService.from_provenance(before)  # a store from before the attribute: today's "auto"
    assert old.precision == "bf16"
    worst_new = worst_old = 1.0
    for item, stored in vecs.items():
        worst_new = min(worst_new, cos(svc.embed_image_file(str(photos / item))[0], stored))
        worst_old = min(worst_old, cos(old.embed_image_file(str(photos / item))[0], stored))
    assert worst_new >= COS_MIN, worst_new
    assert worst_old < COS_MIN, worst_old  # what queries gave before: the check above is not vacuous here
    explicit = EmbeddingService.from_provenance(recorded, precision="bf16")  # an explicit precision still wins
    assert explicit.precision == "bf16"


def test_recorded_fp16_runs_at_fp32_on_cpu():
    import torch

    from embedstore.embedding.service import build_precision_here

    assert build_precision_here("fp16", "auto", torch.device("cpu"))[0] == "fp32"
    assert build_precision_here("fp16", "auto", torch.device("cuda"))[0] == "fp16"
    assert build_precision_here(None, "auto", torch.device("cpu")) == ("auto", None)
    assert build_precision_here("bf16", "fp32", torch.device("cpu")) == ("fp32", None)


def test_extending_a_set_keeps_its_precision(fp32_store, tmp_path, bf16_cpu):
    from embedstore.ingest import build

    root, photos = fp32_store
    store = tmp_path / "s.h5"
    shutil.copytree(photos, tmp_path / "photos")
    build(tmp_path / "photos", store, encoder=ENCODER, precision="fp32", workers=0, progress=False, batch_size=4)
    make_image_folder(tmp_path / "photos", classes=("dog",), per_class=2, size=(56, 44), seed=3)
    r = embed("build", tmp_path / "photos", "--store", store, "--encoder", ENCODER, "--workers", "0", "--json", "-q")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["encoded"] == 2 and rep["precision"] == "fp32" and "built at fp32" in rep["precision_reason"]

    from embedstore.store import sidecar_dir

    before = sorted(p.name for p in sidecar_dir(store).rglob("*"))
    make_image_folder(tmp_path / "photos", classes=("fox",), per_class=1, size=(56, 44), seed=4)
    r = embed("build", tmp_path / "photos", "--store", store, "--encoder", ENCODER, "--workers", "0", "--precision", "bf16")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1
    assert "computed at fp32" in r.stderr and "pass --precision fp32" in r.stderr, r.stderr
    assert sorted(p.name for p in sidecar_dir(store).rglob("*")) == before


def test_search_door_queries_at_the_recorded_precision(fp32_store, bf16_cpu):
    root, photos = fp32_store
    r = embed("search", root / "s.h5", "--image", photos / "cat" / "cat_000.jpg", "-k", 1, "--json")
    assert r.exit_code == 0, r.output
    (hit,) = json.loads(r.output)["hits"]
    assert hit["id"] == "cat/cat_000.jpg" and hit["score"] >= COS_MIN, hit
