"""`embed build --engine ray`: one local Ray cluster (2 CPUs) shared by every test here.

The Ray build must give the same store as the local build (ids, vectors, item rows, provenance),
resume and add incrementally like it, survive a worker killed mid-build with every item stored
exactly once, and fill large IVF / IVF-PQ indexes shard by shard in parallel."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import add_bad_files, copy_store, embed, make_image_folder, synthetic_store, write_image

# one worker runs every test here (scripts/test.sh: --dist loadgroup): one Ray cluster, not one per worker
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]


# module scope: a session-scoped cluster keeps Ray's daemons running through the rest of the worker's
# tests (tried: that fresh-clone run took 14.6 minutes, the one before 13.1; noisy, but not a gain)
@pytest.fixture(scope="module")
def ray_cluster():
    import os

    import ray

    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    yield ray
    ray.shutdown()


def tiny(**kw) -> dict:
    return dict(encoder="test:tiny", precision="fp32", progress=False, batch_size=8, shard_rows=16, **kw)


def snapshot(path: Path) -> dict:
    """Everything a user reads from a store: set provenance, ids -> vectors, item rows by id."""
    from embedstore.store import open_store

    with open_store(path) as st:
        vs = st.select_set()
        vectors = {}
        for ids, block in st.iter_vectors(vs.name):
            vectors.update(zip(ids, block))
        items = st.items()
        cols = [c for c in items if c not in ("mtime_ns",)]
        rows = {r[0]: r for r in zip(*(items[c] for c in cols))}
        # build_precision is not part of the provenance key: a Ray build at `auto` leaves it unrecorded
        # (each worker resolves auto on its own machine), a local build records what it ran at
        key = {k: v for k, v in vs.provenance.items() if k != "build_precision"}
        return {"set": vs.name, "provenance": key, "count": vs.count, "stale": vs.stale_rows,
                "vectors": vectors, "items": rows, "n_items": len(items["id"]), "index": dict(vs.index)}


def assert_same_store(a: dict, b: dict) -> None:
    assert a["set"] == b["set"] and a["provenance"] == b["provenance"]
    assert sorted(a["vectors"]) == sorted(b["vectors"])
    worst = max(float(np.abs(a["vectors"][k] - b["vectors"][k]).max()) for k in a["vectors"])
    assert worst <= 1e-3, worst
    assert a["items"] == b["items"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> tuple[Path, dict]:
    root = make_image_folder(tmp_path_factory.mktemp("ray") / "photos", classes=("cat", "dog", "owl"), per_class=14)
    return root, add_bad_files(root)


@pytest.fixture(scope="module")
def local_store(photos, tmp_path_factory) -> Path:
    from embedstore.ingest import build

    path = tmp_path_factory.mktemp("local") / "local.h5"
    build(photos[0], path, workers=0, **tiny())
    return path


def test_ray_build_gives_the_same_store_as_the_local_build(ray_cluster, photos, local_store, tmp_path):
    r = embed("build", photos[0], "--store", tmp_path / "r.h5", "--engine", "ray", "--encoder", "test:tiny",
              "--precision", "fp32", "--batch-size", 8, "--shard-size", 16, "--json", "-q")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["engine"] == "ray" and rep["cluster"]["cpus"] == 2 and rep["cluster"]["actors"] == 1
    assert rep["encoded"] == 42 and rep["quarantined"] == 4 and rep["shards_written"] >= 3
    assert {q["id"] for q in rep["quarantined_items"]} == set(photos[1])
    ours, ref = snapshot(tmp_path / "r.h5"), snapshot(local_store)
    assert_same_store(ours, ref)
    assert ours["stale"] == 0 and ours["index"]["ntotal"] == 42
    # the Ray door of the parity test (tests/test_parity.py): each file's vector equals the local
    # build's (cosine >= 0.9999 at fp32), and a head answers both alike
    ids = sorted(ref["vectors"])
    A, B = np.stack([ours["vectors"][i] for i in ids]), np.stack([ref["vectors"][i] for i in ids])
    assert ((A * B).sum(1) / (np.linalg.norm(A, axis=1) * np.linalg.norm(B, axis=1)) >= 0.9999).all()
    from embedstore.heads.fit import fit_head

    _, head = fit_head(local_store, "logistic", progress=False)
    np.testing.assert_allclose(head.predict_proba(A), head.predict_proba(B), atol=1e-4)
    # one store to every other command, with the same provenance checks
    r = embed("search", tmp_path / "r.h5", "--id", "cat/cat_003.png", "-k", 3, "--include-self", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["hits"][0]["id"] == "cat/cat_003.png"
    r = embed("fit-head", "logistic", "--store", tmp_path / "r.h5", "--out", tmp_path / "head", "--json")
    assert r.exit_code == 0, r.output
    r = embed("evaluate", tmp_path / "head", "--store", local_store, "--json")
    assert r.exit_code == 0, r.output  # a head fitted on the Ray store scores the local store: same provenance


def test_ray_build_keeps_manifest_metadata_as_the_local_build_does(ray_cluster, photos, tmp_path):
    """A manifest's other columns travel through Ray's stages into the items, as in a local build."""
    import csv

    from embedstore.ingest import build

    files = sorted(p for p in photos[0].rglob("*.*") if p.relative_to(photos[0]).as_posix() not in photos[1])
    manifest = tmp_path / "m.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "brand"])
        w.writerows([[str(p), p.parent.name, f"b{k % 3}"] for k, p in enumerate(files)])
    build(manifest, tmp_path / "r.h5", engine="ray", **tiny())
    build(manifest, tmp_path / "l.h5", workers=0, **tiny())
    ray_items, loc_items = snapshot(tmp_path / "r.h5")["items"], snapshot(tmp_path / "l.h5")["items"]
    assert ray_items == loc_items
    r = embed("ls", tmp_path / "r.h5", "--where", "brand=b1", "--json")
    assert r.exit_code == 0 and len(json.loads(r.stdout)) == len(files[1::3])
    # a file touched (same bytes) and given a new brand: read again, not encoded, counted as updated
    import os

    os.utime(files[0], ns=(files[0].stat().st_atime_ns, files[0].stat().st_mtime_ns + 10**9))
    manifest.write_text(manifest.read_text().replace(f"{files[0]},{files[0].parent.name},b0", f"{files[0]},{files[0].parent.name},b9"))
    rr, rl = build(manifest, tmp_path / "r.h5", engine="ray", **tiny()), build(manifest, tmp_path / "l.h5", workers=0, **tiny())
    assert (rr.encoded, rr.metadata_updated, rr.unchanged) == (rl.encoded, rl.metadata_updated, rl.unchanged) == (0, 1, len(files) - 1)
    assert snapshot(tmp_path / "r.h5")["items"] == snapshot(tmp_path / "l.h5")["items"]


def test_ray_build_resumes_a_local_build_and_adds_incrementally(ray_cluster, photos, tmp_path):
    from embedstore.ingest import build

    src = tmp_path / "photos"
    shutil.copytree(photos[0], src)
    for f in (src / "owl").iterdir():  # the local build sees two classes first
        f.rename(tmp_path / f.name)
    store = tmp_path / "s.h5"
    first = build(src, store, workers=0, **tiny())
    assert first.encoded == 28
    (src / "owl").mkdir(exist_ok=True)
    for f in tmp_path.glob("owl_*"):
        f.rename(src / "owl" / f.name)
    write_image(src / "cat" / "cat_000.jpg", (10, 10, 10), seed=7)  # changed bytes: re-embedded
    r = build(src, store, engine="ray", **tiny())
    assert (r.encoded, r.unchanged) == (15, 27)
    again = build(src, store, **tiny(workers=0))  # the local build sees the Ray shards as its own
    assert again.encoded == 0 and again.unchanged == 42
    snap = snapshot(store)
    assert snap["count"] == 43 - 1 and len(snap["vectors"]) == 42


@pytest.mark.large  # 40-80 s on 2 cores; CI keeps the Ray worker kills below and the local kill -9 test
def test_a_killed_ray_driver_resumes_with_every_item_once(ray_cluster, tmp_path):
    """kill -9 of `embed build --engine ray` (joined to the running cluster by its address) once
    shards have landed; the store opens, the same command finishes the rest, nothing twice."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from embedstore.ingest import build

    src = make_image_folder(tmp_path / "photos", classes=("cat", "dog", "owl"), per_class=60, size=(64, 56))
    store = tmp_path / "s.h5"
    address = ray_cluster.get_runtime_context().gcs_address
    cmd = [str(Path(sys.executable).with_name("embed")), "build", str(src), "--store", str(store), "--engine", "ray",
           "--address", address, "--encoder", "test:tiny", "--precision", "fp32", "--batch-size", "4",
           "--shard-size", "8", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shards = store.with_name("s.h5.d") / "shards"
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        # landed shards only: pathlib's glob also matches the hidden .tmp- files still being written
        if shards.is_dir() and sum(not p.name.startswith(".") for p in shards.rglob("*-ray-*.h5")) >= 2:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the build finished before it could be killed"
    time.sleep(1)  # Ray stops the dead driver's workers
    done = snapshot(store)["count"]  # the store opens; the catalog is rebuilt from the landed shards
    assert 16 <= done < 180
    r = build(src, store, engine="ray", **tiny())
    assert r.encoded + r.unchanged == 180 and r.unchanged >= done and r.encoded > 0
    final = snapshot(store)
    assert final["count"] == 180 and final["n_items"] == 180 and len(final["vectors"]) == 180
    reference = tmp_path / "ref.h5"
    build(src, reference, workers=0, **tiny())
    assert_same_store(final, snapshot(reference))


@pytest.mark.parametrize("stage", ["embed", "write"])
def test_a_worker_killed_mid_build_still_stores_every_item_once(ray_cluster, photos, local_store, tmp_path, monkeypatch, stage):
    """A real SIGKILL: the encoder actor (mid-stream) or a shard writer (after its shard is durable,
    before Ray hears back, so the retry writes it again)."""
    from embedstore.ingest import build

    marker = tmp_path / "killed"
    monkeypatch.setenv("EMBEDSTORE_RAY_FAULT", f"{stage}:{marker}")
    r = build(photos[0], tmp_path / "k.h5", engine="ray", **tiny())
    assert marker.exists(), "no worker was killed"
    assert r.encoded == 42
    snap = snapshot(tmp_path / "k.h5")
    assert snap["count"] == 42 and snap["stale"] == 0 and snap["n_items"] == 46
    assert_same_store(snap, snapshot(local_store))


def test_a_ray_build_fills_its_ivf_index_on_the_cluster(ray_cluster, photos, tmp_path, monkeypatch):
    monkeypatch.setenv("EMBEDSTORE_EXACT_MAX", "20")
    r = embed("build", photos[0], "--store", tmp_path / "ivf.h5", "--engine", "ray", "--encoder", "test:tiny", "--json", "-q")
    assert r.exit_code == 0, r.output
    index = json.loads(r.output)["index"]
    assert index["type"] == "IVFSQfp16" and index["ntotal"] == 42 and index["added_rows"] == 42
    assert 0 < index["recall_at_10"] <= 1 and index["params"]["nprobe"] >= 1
    r = embed("search", tmp_path / "ivf.h5", "--id", "owl/owl_004.jpg", "-k", 3, "--include-self", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["hits"][0]["id"] == "owl/owl_004.jpg"


def test_ray_build_of_texts_matches_the_local_build(ray_cluster, tmp_path):
    from embedstore.ingest import build

    src = tmp_path / "t.jsonl"
    src.write_text("".join(json.dumps({"id": f"t{i}", "text": f"review number {i}: {'good' if i % 2 else 'bad'}",
                                       "label": "pos" if i % 2 else "neg"}) + "\n" for i in range(20)))
    a = build(src, tmp_path / "a.h5", encoder="st:all-MiniLM-L6-v2", progress=False, batch_size=8)
    b = build(src, tmp_path / "b.h5", encoder="st:all-MiniLM-L6-v2", progress=False, batch_size=8, engine="ray")
    assert a.encoded == b.encoded == 20
    assert_same_store(snapshot(tmp_path / "b.h5"), snapshot(tmp_path / "a.h5"))


def test_ray_extends_a_set_at_its_recorded_precision(ray_cluster, tmp_path, monkeypatch):
    """Like the local build (tests/test_query_precision.py): extending an fp32 set with `--precision
    auto` on a bf16 CPU stays fp32."""
    from embedstore.embedding import device
    from embedstore.ingest import build
    from embedstore.store import open_store

    monkeypatch.delenv("EMBEDSTORE_CPU_BF16", raising=False)
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)  # "auto" would pick bf16 here
    src = make_image_folder(tmp_path / "photos", per_class=3)
    kw = dict(encoder="test:tiny", progress=False, batch_size=4, shard_rows=4)
    build(src, tmp_path / "s.h5", precision="fp32", workers=0, **kw)
    make_image_folder(tmp_path / "photos", classes=("owl",), per_class=2, seed=2)
    r = build(src, tmp_path / "s.h5", engine="ray", **kw)
    assert r.encoded == 2 and r.precision == "fp32" and "built at fp32" in r.precision_reason
    with open_store(tmp_path / "s.h5") as st:
        assert st.select_set().attrs["build_precision"] == "fp32"
    build(src, tmp_path / "fresh.h5", engine="ray", **kw)  # auto is resolved on each actor: the driver cannot record it
    with open_store(tmp_path / "fresh.h5") as st:
        assert "build_precision" not in st.select_set().attrs


# ---- error paths: one line, exit 2, nothing stored is touched ----------------------------------

def _bytes(path: Path) -> dict:
    return {p: p.read_bytes() for p in sorted([path, *path.with_name(path.name + ".d").rglob("*")]) if p.is_file()}


@pytest.mark.parametrize("args, message", [
    (["--engine", "spark"], "--engine must be local or ray"),
    (["--address", "auto"], "apply to --engine ray"),
    (["--actors", "2"], "apply to --engine ray"),
    (["--engine", "ray", "--address", "127.0.0.1:9"], "cannot reach the Ray cluster at 127.0.0.1:9"),
    (["--engine", "ray", "--address", "ray://127.0.0.1:9"], "cannot reach the Ray cluster"),
    (["--engine", "ray", "--address", "nowhere"], "--address must be auto, host:port or ray://host:port"),
    (["--engine", "ray", "--actors", "2"], "--actors 2 is more than the Ray cluster can hold"),
    (["--engine", "ray", "--actors", "0"], "--actors must be 1 or more"),
    (["--engine", "ray", "--workers", "2"], "--workers applies to the local engine"),
    (["--engine", "ray", "--device", "cuda"], "the Ray cluster has no GPUs"),
    (["--engine", "ray", "--precision", "fp16"], "fp16 is not supported on CPU"),
])
def test_bad_ray_options_fail_in_one_line_and_leave_the_store_alone(ray_cluster, photos, local_store, tmp_path, args, message):
    store = copy_store(local_store, tmp_path / "keep.h5")
    before = _bytes(store)
    r = embed("build", photos[0], "--store", store, "--encoder", "test:tiny", *args)
    assert r.exit_code == 2, r.output
    assert message in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert _bytes(store) == before


def test_an_actor_whose_encoder_differs_from_the_drivers_stops_the_build(ray_cluster, photos, tmp_path):
    """As on a node with other weights installed: the actor's vector set differs from the driver's."""
    from embedstore.ingest import BuildReport
    from embedstore.ingest.plan import make_plan
    from embedstore.ingest.ray_engine import connect
    from embedstore.embedding import EmbeddingService
    from embedstore.errors import BuildError
    from embedstore.sources import open_source
    from embedstore.store import open_store

    cluster = connect(None)
    cluster.plan("cpu", "fp32", None)
    svc = EmbeddingService.create("test:tiny", device="cpu", precision="fp32")
    svc.encoder.weights_sha256 = "0" * 64  # the driver's weights differ from the ones each node finds
    todo = make_plan(open_source(photos[0]).items).todo
    report = BuildReport(*[""] * 8, batch_size=8, workers=1)
    with open_store(tmp_path / "s.h5", mode="a", create=True) as st, pytest.raises(BuildError, match="differs from the driver's"):
        cluster.run(st, todo, svc, None, {}, 8, 16, report, False)
    assert not list((tmp_path / "s.h5.d" / "shards").rglob("*.h5"))


@pytest.mark.parametrize("case", ["foreign-store", "empty-folder", "texts-with-image-encoder"])
def test_bad_input_with_the_ray_engine_fails_in_one_line(ray_cluster, photos, tmp_path, case):
    import h5py

    src, store, expect = photos[0], tmp_path / "s.h5", None
    if case == "foreign-store":
        with h5py.File(store, "w") as f:
            f["data"] = [1, 2, 3]
        expect = "not an embedstore store"
    elif case == "empty-folder":
        src = tmp_path / "empty"
        src.mkdir()
        expect = "has no files to embed"
    else:
        src = tmp_path / "t.txt"
        src.write_text("a sentence\nanother one\n")
        expect = "is a text source"
    before = store.read_bytes() if store.exists() else None
    r = embed("build", src, "--store", store, "--encoder", "test:tiny", "--engine", "ray")
    assert r.exit_code == 2 and expect in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert (store.read_bytes() if store.exists() else None) == before


def test_without_ray_installed_the_error_names_the_extra(photos, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    r = embed("build", photos[0], "--store", tmp_path / "s.h5", "--encoder", "test:tiny", "--engine", "ray")
    assert r.exit_code == 2 and "pip install 'embedstore[ray]'" in r.output
    assert not (tmp_path / "s.h5").exists()


def test_a_node_that_cannot_see_the_store_is_named(tmp_path):
    from embedstore.ingest.ray_engine import _probe

    assert _probe(str(tmp_path), None) is None
    msg = _probe(str(tmp_path / "not-mounted"), None)
    assert "cannot write the store's shard folder" in msg and "same path" in msg
    assert "cannot see" in _probe(str(tmp_path), str(tmp_path / "missing.jpg"))


# ---- large indexes: trained on a sample, filled shard by shard in parallel, merged -------------

@pytest.mark.parametrize("kind, exact_max, pq_min", [("ivfflat", 500, 10**9), ("ivfpq", 500, 1000)])
def test_parallel_index_fill_equals_the_sequential_one(ray_cluster, tmp_path, monkeypatch, kind, exact_max, pq_min):
    from embedstore.ingest.ray_index import ParallelAdd
    from embedstore.store import open_store
    from embedstore.store.index import load_index

    monkeypatch.setenv("EMBEDSTORE_EXACT_MAX", str(exact_max))
    monkeypatch.setenv("EMBEDSTORE_PQ_MIN", str(pq_min))
    results = {}
    for mode in ("sequential", "parallel"):
        path = tmp_path / f"{mode}.h5"
        synthetic_store(path, 4000, 32, shards=5)
        with open_store(path, mode="a") as st:
            st.refresh(index=True, parallel=ParallelAdd(tasks=4) if mode == "parallel" else None)
            ids = list(st.live_ids("synthetic-0000"))
        index, meta = load_index(path.with_name(path.name + ".d"), "synthetic-0000", sorted(ids))
        assert meta["kind"] == kind and meta["ntotal"] == 4000
        Q = np.random.default_rng(5).normal(size=(50, 32)).astype(np.float32)
        results[mode] = (index.search(Q, 10), meta)
    (Ds, Is), seq_meta = results["sequential"]
    (Dp, Ip), par_meta = results["parallel"]
    assert np.array_equal(Is, Ip) and np.allclose(Ds, Dp)
    assert par_meta["recall_at_10"] == seq_meta["recall_at_10"] and par_meta["params"] == seq_meta["params"]
    if kind == "ivfpq":
        assert par_meta["params"]["pq_m"] == 8 and par_meta["type"] == "IVFPQ"
    else:
        assert par_meta["recall_at_10"] >= 0.95
