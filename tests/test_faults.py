"""Hostile inputs and file systems: odd file names, bad manifest cells, a full or read-only disk,
stray files, a dead writer's lock. Each case: a clear reason (one line or a quarantine), no committed
row lost, and the same command succeeds once the fault is gone."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import h5py
import pytest

from conftest import embed, write_image
from embedstore.sources.items import local_path
from embedstore.store import open_store


def _items(store: Path) -> dict[str, dict]:
    with open_store(store) as st:
        it = st.items()
    return {i: {c: it[c][k] for c in it} for k, i in enumerate(it["id"])}


def test_a_file_name_that_is_not_utf8_is_embedded_and_kept_losslessly(image_folder, tmp_path, build_tiny):
    raw = os.fsencode(image_folder / "cat") + b"/caf\xe9-\xff.jpg"  # Latin-1 bytes: not valid UTF-8
    src = write_image(image_folder / "_x.jpg", seed=5)
    os.rename(os.fsencode(src), raw)
    store = tmp_path / "s.h5"
    report = build_tiny(image_folder, store)
    assert report.quarantined == 0 and report.encoded == 13
    items = _items(store)
    row = items["cat/caf\\xe9-\\xff.jpg"]  # the id shows the bytes escaped
    assert row["status"] == "ok" and row["label"] == "cat"
    assert os.fsencode(local_path(row["uri"])) == raw  # the stored uri gives the exact bytes back
    with h5py.File(store, "r") as f:  # plain h5py reads it as a valid UTF-8 string
        assert any(u.startswith("file://") and "%E9" in u for u in f["items"]["uri"].asstr()[()])
    again = build_tiny(image_folder, store)  # and it is recognised as unchanged next time
    assert again.encoded == 0 and again.unchanged == 13


def test_bad_manifest_rows_are_quarantined_with_their_reason(tmp_path, build_tiny):
    imgs = tmp_path / "imgs"
    for i in range(4):
        write_image(imgs / f"{i}.jpg", seed=i)
    m = tmp_path / "m.csv"
    m.write_bytes(b"path,label\nimgs/0.jpg,a\nimgs/1.jpg,b\x00c\nimgs/missing.jpg,a\nimgs/2.jpg,\xff\xfe\n,a\nimgs/3.jpg,b\n")
    store = tmp_path / "s.h5"
    report = build_tiny(m, store)
    assert report.encoded == 2 and report.quarantined == 4
    reasons = {q["id"]: q["reason"] for q in report.quarantined_items}
    assert "NUL byte in column 'label'" in reasons["imgs/1.jpg"]
    assert "file not found: imgs/missing.jpg" in reasons["imgs/missing.jpg"]
    assert "not valid UTF-8" in reasons["imgs/2.jpg"]
    assert any("empty 'path'" in r for r in reasons.values())
    items = _items(store)
    assert items["imgs/1.jpg"]["status"] == "quarantined" and items["imgs/0.jpg"]["status"] == "ok"
    # fixed rows are embedded by the same command
    m.write_text("path,label\nimgs/0.jpg,a\nimgs/1.jpg,b\nimgs/2.jpg,a\nimgs/3.jpg,b\n")
    report = build_tiny(m, store)
    assert report.encoded == 2 and report.quarantined == 0


def test_a_stray_file_in_the_shard_folder_is_ignored_with_a_note(image_folder, tmp_path, build_tiny):
    store = tmp_path / "s.h5"
    build_tiny(image_folder, store)
    set_dir = next((Path(str(store) + ".d") / "shards").iterdir())
    with h5py.File(set_dir / "copy.h5", "w") as f:
        f["x"] = [1, 2, 3]
    (set_dir / "notes.txt").write_text("mine")
    with open_store(store) as st:
        assert st.select_set().count == 12
    report = build_tiny(image_folder, store)
    assert any("not shards" in n for n in report.notes) and report.vectors_in_set == 12
    r = embed("verify", store, "--json")
    assert r.exit_code == 0 and any("copy.h5" in n for n in json.loads(r.stdout)["notes"])


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs (needs root and mount rights; skipped elsewhere). Unmounted afterwards."""
    import subprocess

    d = tmp_path / "disk"
    d.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(d)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def _fill(disk: Path, leave: int) -> Path:
    import shutil

    filler = disk / "filler"
    filler.write_bytes(b"\0" * max(0, shutil.disk_usage(disk).free - leave))
    return filler


def test_a_full_disk_stops_with_one_line_and_the_same_command_resumes(tmp_path, small_disk):
    from conftest import make_image_folder

    src = make_image_folder(tmp_path / "photos", per_class=30)
    store = small_disk / "s.h5"
    filler = _fill(small_disk, 400_000)
    args = ["build", src, "--store", store, "--encoder", "test:tiny", "--workers", 0, "--precision", "fp32",
            "--batch-size", 4, "--shard-size", 4, "--json", "--quiet"]
    r = embed(*args)
    errors = [x for x in r.stderr.splitlines() if x.startswith("error:")]  # (the rest is the progress bar)
    assert r.exit_code != 0 and len(errors) == 1 and "Traceback" not in r.stderr
    assert "no space left" in r.stderr and str(small_disk) in r.stderr and "re-run the same command" in r.stderr
    assert not [n for _, _, fs in os.walk(small_disk) for n in fs if n.startswith(".tmp-")]  # no temporaries left
    committed = sum(len(h5py.File(f, "r")["items"]["id"]) for f in (Path(str(store) + ".d") / "shards").rglob("*.h5"))
    assert committed > 0
    filler.unlink()
    r = embed(*args)
    assert r.exit_code == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["unchanged"] == committed and d["encoded"] == 60 - committed and d["vectors_in_set"] == 60
    assert embed("verify", store).exit_code == 0


def test_a_read_only_disk_is_one_line_and_reading_still_works(image_folder, small_disk, build_tiny):
    import subprocess

    from embedstore.errors import StoreError

    store = small_disk / "s.h5"
    build_tiny(image_folder, store)
    write_image(image_folder / "cat" / "new.jpg", seed=77)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    try:
        with pytest.raises(StoreError, match="read-only.*remount it read-write.*re-run the same command"):
            build_tiny(image_folder, store)
        with open_store(store) as st:
            assert st.select_set().count == 12
        assert embed("info", store).exit_code == 0
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    report = build_tiny(image_folder, store)
    assert report.encoded == 1 and report.vectors_in_set == 13


def test_a_copy_on_a_read_only_disk_never_reads_the_originals_shards(image_folder, small_disk, build_tiny, tmp_path, monkeypatch):
    """A copied store's catalog points at the original's folder (s.h5.d), by a path HDF5 resolves
    from the working folder: on a read-only disk, where the copy's catalog cannot be rewritten, a
    reader read the original's shards while they were there, and called the copy damaged once they
    were gone. It is one line naming the copy, and nothing is read."""
    import subprocess

    orig = tmp_path / "orig"
    orig.mkdir()
    build_tiny(image_folder, orig / "s.h5")
    shutil.copy(orig / "s.h5", small_disk / "c.h5")
    shutil.copytree(orig / "s.h5.d", small_disk / "c.h5.d")
    monkeypatch.chdir(orig)  # where s.h5.d resolves from
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    try:
        for args in (("search", small_disk / "c.h5", "--id", "cat/cat_000.jpg"), ("info", small_disk / "c.h5"), ("ls", small_disk / "c.h5")):
            r = embed(*args)
            errors = [x for x in r.output.splitlines() if x.startswith("error:")]
            assert r.exit_code != 0 and len(errors) == 1 and "Traceback" not in r.output, (args, r.output)
            assert "points at s.h5.d/shards, not c.h5.d/shards (the store was copied or renamed)" in errors[0], errors
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    r = embed("search", small_disk / "c.h5", "--id", "cat/cat_000.jpg", "-k", 3)  # writable again: the copy's catalog is rewritten
    assert r.exit_code == 0, r.output


def test_a_copy_whose_catalog_cannot_be_rewritten_for_a_full_disk_is_refused_too(image_folder, build_tiny, tmp_path, monkeypatch):
    """Without root: the copy's catalog update fails on a (faked) full disk; reading it as it was
    read the original's shards from the working folder."""
    import errno

    import embedstore.atomic as A
    import embedstore.store.catalog as C
    from embedstore.errors import StoreError
    from embedstore.search.query import search

    orig, copy = tmp_path / "orig", tmp_path / "copy"
    orig.mkdir(), copy.mkdir()
    build_tiny(image_folder, orig / "s.h5")
    shutil.copy(orig / "s.h5", copy / "c.h5")
    shutil.copytree(orig / "s.h5.d", copy / "c.h5.d")
    monkeypatch.chdir(orig)

    def full(directory, need):
        raise A.disk_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), directory)

    monkeypatch.setattr(C, "check_free_space", full)
    with pytest.raises(StoreError, match="points at s.h5.d/shards, not c.h5.d/shards .*no space left"):
        search(copy / "c.h5", item_id="cat/cat_000.jpg", k=3)


def test_running_out_of_space_is_caught_before_hdf5_writes(image_folder, tmp_path, build_tiny, monkeypatch):
    """Without root: the free-space check, faked to say the disk is full after two shards."""
    import shutil

    from embedstore.errors import StoreError

    real, calls = shutil.disk_usage, {"n": 0}

    def full_after_two(path):
        calls["n"] += 1
        u = real(path)
        return u._replace(free=0) if calls["n"] > 3 else u  # the new catalog, then two shards

    monkeypatch.setattr(shutil, "disk_usage", full_after_two)
    store = tmp_path / "s.h5"
    with pytest.raises(StoreError, match="no space left"):
        build_tiny(image_folder, store)
    monkeypatch.setattr(shutil, "disk_usage", real)
    with open_store(store) as st:
        kept = len(st.items()["id"])
    assert kept == 8  # the two committed shards of 4 rows
    report = build_tiny(image_folder, store)
    assert report.unchanged == 8 and report.encoded == 4


def test_the_lock_dies_with_the_writer_even_when_its_children_live(tmp_path):
    """flock is shared with forked children (decode workers): they must not keep the store locked."""
    import signal
    import subprocess
    import sys
    import time

    from embedstore.store.lock import StoreLock

    lock_path = tmp_path / "s.h5.d" / "lock"
    code = f"""
import os, signal, sys, time
from pathlib import Path
from embedstore.store.lock import StoreLock
lock = StoreLock(Path({str(lock_path)!r}))
assert lock.acquire()
child = os.fork()
if child == 0:  # off the captured pipes: the test reads them to their end, which would wait for this sleep
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 1)
    os.dup2(null, 2)
    time.sleep(30)
    os._exit(0)
print(child, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    child = int(p.stdout.strip())
    try:
        os.kill(child, 0)  # the forked child is still running ...
        mine = StoreLock(lock_path)
        assert mine.acquire(), "the dead writer's child still holds the lock"  # ... and the lock is free
        mine.release()
    finally:
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass
    time.sleep(0)


def test_a_dead_writers_catalog_temporary_is_swept(image_folder, tmp_path, build_tiny):
    store = tmp_path / "s.h5"
    build_tiny(image_folder, store)
    dead = tmp_path / ".tmp-999999999-abcd-s.h5"
    dead.write_bytes(b"half a catalog")
    other = tmp_path / ".tmp-999999999-abcd-users-own.h5"
    other.write_bytes(b"not ours")
    report = build_tiny(image_folder, store)
    assert not dead.exists() and other.exists() and any("temporary" in n for n in report.notes)


def test_the_catalog_is_rebuilt_beside_the_commits_not_inside_them(tmp_path, monkeypatch):
    """A commit never waits on the catalog: rebuilds run on their own thread, spaced by their cost."""
    import threading
    import time

    import numpy as np

    from embedstore.ingest.writer import ShardWriter
    from embedstore.store.store import Store

    seen, plain = [], Store.refresh

    def slow_refresh(self, *a, **kw):
        seen.append(threading.current_thread().name)
        time.sleep(0.2)
        return plain(self, *a, **kw)

    monkeypatch.setattr(Store, "refresh", slow_refresh)
    attrs = {"encoder": "synthetic", "dim": 4, "dtype": "float32", "normalize": "none", "modality": "image"}
    with open_store(tmp_path / "s.h5", mode="a", create=True) as st:
        w = ShardWriter(st, "synthetic-0000", attrs, {}, 4, "float32", shard_rows=2, catalog_seconds=0.0)
        for i in range(20):
            row = {"id": f"v{i}", "uri": f"/d/{i}", "sha256": f"s{i}", "status": "ok"}
            w.put([row], np.ones((1, 4), np.float32), [row])
        w.close()
        assert w.shards == 10 and w.catalog_refreshes >= 1
        assert "embedstore-writer" not in seen[1:] and "embedstore-catalog" in seen
        st.refresh(index=False)
    with open_store(tmp_path / "s.h5") as st:
        assert st.select_set().count == 20


@pytest.mark.parametrize("catalog_seconds", ["30", "0"])
def test_a_disk_that_fills_after_the_free_space_check_is_one_line_too(tmp_path, small_disk, catalog_seconds):
    """Another process can take the space between the check and the write: the write fails, which is
    the same one-line "no space left" error, with no temporaries left and the same command resuming
    once space is free. With the catalog brought up to date after every commit ("0"), a catalog
    write fails too, on its own thread: HDF5 closing a file whose write had failed crashed the
    process there (a segmentation fault; atomic.atomic_h5 now never lets HDF5 see the failure)."""
    import subprocess
    import sys

    from conftest import make_image_folder

    src = make_image_folder(tmp_path / "photos", per_class=30)
    store = small_disk / "s.h5"
    filler = _fill(small_disk, 300_000)
    code = ("import sys\nimport embedstore.atomic as A, embedstore.store.shards as S, embedstore.store.catalog as C\n"
            "A.check_free_space = S.check_free_space = C.check_free_space = lambda d, n: None  # the check passed\n"
            "from embedstore.cli.main import main\n"
            f"sys.argv = ['embed', 'build', {str(src)!r}, '--store', {str(store)!r}, '--encoder', 'test:tiny', '--workers', '0', "
            "'--precision', 'fp32', '--batch-size', '4', '--shard-size', '4', '--quiet']\nsys.exit(main())")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "HF_HUB_OFFLINE": "1", "EMBEDSTORE_CATALOG_SECONDS": catalog_seconds})
    errors = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert r.returncode not in (0, -11, 139) and len(errors) == 1, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr, r.stderr[-2000:]
    assert "no space left" in errors[0] and "unexpected" not in errors[0] and "re-run the same command" in errors[0], errors
    assert not [n for _, _, fs in os.walk(small_disk) for n in fs if n.startswith(".tmp-")]
    filler.unlink()
    r = embed("build", src, "--store", store, "--encoder", "test:tiny", "--workers", 0, "--precision", "fp32",
              "--batch-size", 4, "--shard-size", 4, "--json", "--quiet")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["vectors_in_set"] == 60 and embed("verify", store).exit_code == 0
