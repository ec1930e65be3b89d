"""Hostile inputs and file systems: odd file names, bad manifest cells, a full or read-only disk,
stray files, a dead writer's lock. Each case: a clear reason (one line or a quarantine), no committed
row lost, and the same command succeeds once the fault is gone."""

from __future__ import annotations

import json
import os
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
