"""The one atomic writer (embedstore.atomic) and the one --force rule; a saved head replaced with
--force survives a kill -9 at every step of the save as either the old head or the new one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import embed, make_image_folder
from embedstore.atomic import (TMP_PREFIX, atomic_path, check_replace, remove_stale_temps, temp_path, write_bytes_atomic,
                               write_json_atomic, write_text_atomic)
from embedstore.errors import DetectorError, HeadError
from embedstore.store.shards import list_shards

OLD, NEW = ["a", "b"], ["x", "y", "z"]

# save(): fit a ridge head on seeded vectors with the given classes and save it to OUT (replacing with force).
SAVE = """
import sys
import numpy as np
from embedstore.heads.linear import RidgeHead
from embedstore.modelfile import save_head

def save(out, classes, force=False):
    rng = np.random.default_rng(len(classes))
    X = rng.normal(size=(10 * len(classes), 8)).astype(np.float32)
    save_head(out, RidgeHead().fit(X, np.repeat(classes, 10)), {"note": ",".join(classes)}, overwrite=force)

if __name__ == "__main__":
    save(sys.argv[1], sys.argv[2].split(","), sys.argv[3] == "1")
"""
_ns: dict = {}
exec(SAVE, _ns)
save = _ns["save"]


def killed_save(out: Path, classes: list[str], fault: str, force: bool = False) -> subprocess.CompletedProcess:
    """save() in a subprocess that EMBEDSTORE_FAULT kills with SIGKILL at the step `fault`."""
    return subprocess.run([sys.executable, "-c", SAVE, str(out), ",".join(classes), "1" if force else "0"],
                          env={**os.environ, "EMBEDSTORE_FAULT": fault}, capture_output=True, text=True, timeout=120)


def loaded_classes(out: Path) -> list[str]:
    from embedstore.modelfile import load_head

    head, doc = load_head(out)
    assert doc["note"] == ",".join(str(c) for c in head.classes_)  # JSON and arrays belong together
    return [str(c) for c in head.classes_]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# -- the writer ------------------------------------------------------------------------------------------------


def test_write_replaces_whole_and_leaves_no_temporary(tmp_path):
    p = tmp_path / "f.bin"
    write_bytes_atomic(p, b"old")
    write_bytes_atomic(p, b"new" * 1000)
    assert p.read_bytes() == b"new" * 1000
    write_json_atomic(tmp_path / "d.json", {"k": [1, 2]}, indent=1)
    assert json.loads((tmp_path / "d.json").read_text()) == {"k": [1, 2]}
    write_text_atomic(tmp_path / "t.txt", "héllo")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo"
    assert leftovers(tmp_path) == []


def test_an_exception_removes_the_temporary_and_keeps_the_old_file(tmp_path):
    p = tmp_path / "f.txt"
    p.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(p) as tmp:
            tmp.write_text("half of the new")
            raise RuntimeError("writer failed")
    assert p.read_text() == "old" and leftovers(tmp_path) == []
    with pytest.raises(RuntimeError):  # a folder being written is removed too
        with atomic_path(tmp_path / "d") as tmp:
            tmp.mkdir()
            (tmp / "x").write_text("x")
            raise RuntimeError("writer failed")
    assert not (tmp_path / "d").exists() and leftovers(tmp_path) == []


def test_a_folder_is_renamed_into_place_complete(tmp_path):
    with atomic_path(tmp_path / "d") as tmp:
        tmp.mkdir()
        (tmp / "a.txt").write_text("a")
        assert not (tmp_path / "d").exists()
    assert (tmp_path / "d" / "a.txt").read_text() == "a" and leftovers(tmp_path) == []


def test_temporaries_keep_the_suffix_and_are_what_sweeps_and_shard_listings_recognise(tmp_path):
    t = temp_path(tmp_path / "0001.h5")
    assert t.name.startswith(f"{TMP_PREFIX}{os.getpid()}-") and t.suffix == ".h5"
    t.write_bytes(b"mine, still being written")
    dead = tmp_path / f"{TMP_PREFIX}999999999-abcd-0002.h5"
    dead.write_bytes(b"a killed writer's")
    committed = f"{3:020d}-123-000003.h5"  # shard names: <ns>-<pid>-<counter>.h5
    (tmp_path / committed).write_bytes(b"committed")
    assert list_shards(tmp_path) == [committed]
    assert remove_stale_temps(tmp_path) == 1
    assert t.exists() and not dead.exists() and (tmp_path / committed).exists()


def test_a_kill_before_the_rename_leaves_the_old_file(tmp_path):
    p = tmp_path / "f.txt"
    p.write_text("old")
    code = f"from embedstore.atomic import write_text_atomic; write_text_atomic({str(p)!r}, 'new')"
    r = subprocess.run([sys.executable, "-c", code], env={**os.environ, "EMBEDSTORE_FAULT": "written:f.txt"})
    assert r.returncode == -9
    assert p.read_text() == "old" and len(leftovers(tmp_path)) == 1  # the complete temporary of a dead writer
    assert remove_stale_temps(tmp_path) == 1 and leftovers(tmp_path) == []


# -- the --force rule --------------------------------------------------------------------------------------------


def test_check_replace(tmp_path):
    mine, theirs, a_file = tmp_path / "mine", tmp_path / "theirs", tmp_path / "file"
    mine.mkdir()
    (mine / "head.json").write_text("{}")
    theirs.mkdir()
    a_file.write_text("x")
    rule = dict(what="saved head", error=HeadError, markers=["head.json"])
    assert check_replace(tmp_path / "new", False, **rule) is False
    assert check_replace(mine, True, **rule) is True
    with pytest.raises(HeadError, match="already exists; pass --force"):
        check_replace(mine, False, **rule)
    for path in (theirs, a_file):  # never ours: --force is not advised, since it would be refused
        for force in (False, True):
            with pytest.raises(HeadError, match="is not a saved head, so it is never replaced .*; choose another path$"):
                check_replace(path, force, **rule)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from embedstore.ingest import build

    root = tmp_path_factory.mktemp("force")
    make_image_folder(root / "photos", classes=("cat", "dog"), per_class=10)
    build(root / "photos", root / "s.h5", encoder="test:tiny", workers=0, precision="fp32", progress=False)
    return root / "s.h5"


COMMANDS = {  # command -> (its arguments before the output option, the output option, the file it writes there)
    "fit-head": (["fit-head", "ridge"], "--out", "head.json"),
    "anomalies": (["anomalies", "--method", "knn"], "--save", "detector.json"),
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_force_rule_through_the_cli(store, tmp_path, command):
    args, option, meta = COMMANDS[command]
    out = tmp_path / "model"
    assert embed(*args, "--store", store, option, out, "-q").exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def refused(target, *extra, store=store):
        r = embed(*args, "--store", store, option, target, *extra, "-q")
        assert r.exit_code == 2, r.output
        assert r.output.startswith("error: ") and len(r.output.strip().splitlines()) == 1
        return r.output

    assert "already exists; pass --force" in refused(out)
    assert "already exists" in refused(out, store=tmp_path / "missing.h5")  # refused before the store is even opened
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("not ours")
    assert "not a saved" in refused(theirs, "--force")
    (tmp_path / "plain").write_text("a file")
    assert "not a saved" in refused(tmp_path / "plain", "--force")
    assert (theirs / "notes.txt").read_text() == "not ours" and (tmp_path / "plain").read_text() == "a file"

    assert embed(*args, "--store", store, option, out, "--force", "-q").exit_code == 0
    doc = json.loads((out / meta).read_text())
    assert sorted(p.name for p in out.iterdir()) == sorted([doc["arrays_file"], meta])
    assert leftovers(tmp_path) == []


# -- replacing a saved head survives a kill at any instant ----------------------------------------------------


@pytest.mark.parametrize("step, survivor", [
    ("saved:arrays", OLD),  # the new arrays are in place under their own name; head.json still names the old
    ("written:head.json", OLD),  # the new head.json is complete under its temporary name
    ("renamed:head.json", NEW),  # the commit point has passed
    ("saved:before-cleanup", NEW),  # the old arrays are still there, named by nothing
])
def test_kill_during_a_forced_replace_leaves_old_or_new_head(tmp_path, step, survivor):
    out = tmp_path / "head"
    save(out, OLD)
    r = killed_save(out, NEW, step, force=True)
    assert r.returncode == -9, r.stderr  # it did die at that step
    assert loaded_classes(out) == survivor
    save(out, NEW, force=True)  # the next save cleans up what the killed one left
    assert loaded_classes(out) == NEW
    assert sorted(p.name for p in out.iterdir()) == sorted([json.loads((out / "head.json").read_text())["arrays_file"], "head.json"])
    assert leftovers(tmp_path) == []


def test_a_kill_while_saving_a_new_head_leaves_no_head_and_nothing_in_the_way(tmp_path):
    out = tmp_path / "head"
    assert killed_save(out, NEW, "saved:arrays").returncode == -9
    assert not out.exists()
    save(out, NEW)
    assert loaded_classes(out) == NEW


def test_format_1_heads_load_and_are_replaced_cleanly(tmp_path):
    out = tmp_path / "head"
    save(out, OLD)
    doc = json.loads((out / "head.json").read_text())  # turn it into a format-1 head: arrays.npz, not named
    (out / doc.pop("arrays_file")).rename(out / "arrays.npz")
    doc["version"] = 1
    del doc["content_sha256"]  # format 1 recorded no checksum of its own content
    (out / "head.json").write_text(json.dumps(doc))
    assert loaded_classes(out) == OLD
    save(out, NEW, force=True)
    assert loaded_classes(out) == NEW and not (out / "arrays.npz").exists()


@pytest.mark.parametrize("name", ["../arrays.npz", "/etc/passwd", "sub/arrays-ab.npz", "..", "head.json", 3])
def test_an_arrays_file_outside_the_folder_is_refused(tmp_path, name):
    from embedstore.modelfile import content_sha256, load_head

    out = tmp_path / "head"
    save(out, OLD)
    doc = json.loads((out / "head.json").read_text())
    doc["arrays_file"] = name
    doc["content_sha256"] = content_sha256(doc)  # past the content checksum, to the check of the name
    (out / "head.json").write_text(json.dumps(doc))
    with pytest.raises(HeadError, match="names arrays file"):
        load_head(out)


def test_detector_folder_uses_the_same_rule(tmp_path):
    from embedstore.modelfile import check_model_out

    (tmp_path / "det").mkdir()
    (tmp_path / "det" / "head.json").write_text("{}")  # a head is not a detector
    with pytest.raises(DetectorError, match="not a saved detector"):
        check_model_out(tmp_path / "det", True, "detector")


def test_a_ctrl_c_inside_an_hdf5_write_is_raised_after_the_file_closes(tmp_path):
    """HDF5 writes a store file through atomic._Writes (Python callbacks). A Ctrl-C landing in one
    reached HDF5 as a failed write, and closing that file then crashed the process (segmentation
    fault, about 2 in 5 runs of a timed SIGINT). It is kept, the file closes, the temporary goes,
    and KeyboardInterrupt is raised. A subprocess, so a crash fails the test rather than the run."""
    import subprocess
    import sys

    code = f"""
import os, signal, numpy as np
import embedstore.atomic as A
real, sent = A._Writes._write, []
def write(self, b):
    if not sent and len(b) > 1000:
        sent.append(1)
        os.kill(os.getpid(), signal.SIGINT)  # handled on the next bytecode: inside this callback
    return real(self, b)
A._Writes._write = write
try:
    with A.atomic_h5({str(tmp_path / "x.h5")!r}) as f:
        d = f.create_dataset("x", shape=(100000,), dtype="i8", chunks=(1000,))
        d[:] = np.arange(100000)
        del d  # closing the dataset flushes its chunks through the callbacks
        f.create_dataset("y", data=np.arange(10))
    print("no interrupt")
except KeyboardInterrupt:
    print("interrupted", sorted(os.listdir({str(tmp_path)!r})))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    assert r.stdout.strip() == "interrupted []", (r.stdout, r.stderr[-2000:])
    assert "Exception ignored" not in r.stderr, r.stderr[-2000:]
