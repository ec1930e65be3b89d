"""kill -9 a real `embed build` at several points; the store must open, resume, and end
with every item exactly once and vectors equal to an uninterrupted build."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from embedstore.ingest import build
from embedstore.store import open_store, sidecar_dir
from embedstore.store.shards import list_shards

from conftest import embed, make_image_folder, write_image

EMBED = str(Path(sys.executable).with_name("embed"))


def build_cmd(src, store):
    return [EMBED, "build", str(src), "--store", str(store), "--encoder", "test:tiny", "--precision", "fp32",
            "--workers", "0", "--batch-size", "4", "--shard-size", "8", "--quiet"]


def shard_count(store) -> int:
    root = sidecar_dir(store) / "shards"
    return sum(len(list_shards(d)) for d in root.iterdir()) if root.is_dir() else 0


def snapshot(store):
    with h5py.File(store, "r") as f:
        (name,) = list(f["vectors"]) or [None]
        if name is None:
            return [], np.zeros((0, 32))
        g = f["vectors"][name]
        return list(g["ids"].asstr()[()]), g["vectors"][()].astype(np.float32)


def kill_when(proc, store, min_shards: int, timeout: float = 60.0) -> bool:
    """SIGKILL the build once at least `min_shards` shards exist; False if it finished first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if min_shards == 0 or shard_count(store) >= min_shards:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.005)
    proc.kill()
    raise AssertionError("build did not reach the kill point in time")


@pytest.mark.slow
def test_kill_9_at_several_points_then_resume(tmp_path):
    src = make_image_folder(tmp_path / "photos", classes=("cat", "dog", "owl"), per_class=60, size=(96, 80))
    reference = tmp_path / "ref.h5"
    # the uninterrupted reference is built in-process (the same build() the command runs): one
    # interpreter start less than a subprocess, which costs seconds on a 2-core machine
    build(src, reference, encoder="test:tiny", precision="fp32", workers=0, batch_size=4, shard_rows=8, progress=False)
    ref_ids, ref_vecs = snapshot(reference)
    assert len(ref_ids) == 180

    store = tmp_path / "s.h5"
    killed, committed = 0, 0
    for min_shards in (0, 1, 9, 19):  # before any shard, after the first, mid-way, late (of 23)
        proc = subprocess.Popen(build_cmd(src, store), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        killed += kill_when(proc, store, min_shards)
        if not store.exists():
            continue
        with open_store(store) as st:  # a killed build leaves a store that opens
            info = st.info()
        ids, vecs = snapshot(store)
        assert len(ids) == len(set(ids)) and np.isfinite(vecs).all()  # no duplicates, no holes
        assert info["ok"] == len(ids) and set(ids) <= set(ref_ids)
        assert len(ids) >= committed  # no committed row is lost
        committed = len(ids)
    assert killed >= 3, "the build finished before most kill points; make the fixture larger"

    done = subprocess.run(build_cmd(src, store), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    ids, vecs = snapshot(store)
    assert len(ids) == len(set(ids)) == 180
    assert sorted(ids) == sorted(ref_ids)
    order = {i: k for k, i in enumerate(ids)}
    np.testing.assert_allclose(vecs[[order[i] for i in ref_ids]], ref_vecs, atol=2e-3)
    with open_store(store) as st:
        (vs,) = st.vector_sets()
        assert vs.count == 180 and vs.index["ntotal"] == 180
    again = embed(*build_cmd(src, store)[1:], "--json")  # in-process, as `embed` would run it
    assert again.exit_code == 0 and json.loads(again.stdout)["encoded"] == 0


def test_leftover_temp_files_are_ignored_and_cleaned(image_folder, tmp_path, build_tiny):
    store = tmp_path / "s.h5"
    build_tiny(image_folder, store)
    name = open_store(store).vector_sets()[0].name
    set_dir = sidecar_dir(store) / "shards" / name
    ids_before, _ = snapshot(store)
    junk = set_dir / ".tmp-999999-00000000000000000001-999999-000000.h5"
    junk.write_bytes(b"half a shard")
    (tmp_path / ".s.h5.tmp-999999").write_bytes(b"half a catalog")
    with open_store(store) as st:  # a reader ignores temp files: same rows, catalog not rebuilt
        assert st.info()["ok"] == 12
    assert sorted(snapshot(store)[0]) == sorted(ids_before)
    r = build_tiny(image_folder, store)
    assert r.encoded == 0 and not junk.exists()
    assert open_store(store).info()["ok"] == 12


def test_shards_committed_after_last_catalog_are_recovered_on_open(image_folder, tmp_path, build_tiny):
    """A build killed between committing a shard and rewriting the catalog loses nothing."""
    store = tmp_path / "s.h5"
    build_tiny(image_folder, store)
    with h5py.File(store, "r") as f:
        shards_before = list(f["shards"].asstr()[()])
    saved = store.read_bytes()
    for i in range(3):
        write_image(image_folder / "cat" / f"late_{i}.jpg", (200, 60, 40), seed=500 + i)
    build_tiny(image_folder, store)
    store.write_bytes(saved)  # roll the catalog back, as if killed before it was rewritten
    with h5py.File(store, "r") as f:
        assert list(f["shards"].asstr()[()]) == shards_before
    with open_store(store) as st:
        assert st.info()["ok"] == 15
    assert len(snapshot(store)[0]) == 15
