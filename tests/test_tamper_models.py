"""Saved heads and detectors edited behind our back fail in one line before any computation:
another class count, a huge or wrong n_features, another kind, bad parameters, cut or flipped bytes."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import embed, make_image_folder


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("tamper")
    make_image_folder(root / "photos", classes=("cat", "dog", "owl"), per_class=8)
    assert embed("build", root / "photos", "--store", root / "s.h5", "--encoder", "test:tiny", "--precision", "fp32",
                 "-q").exit_code == 0
    assert embed("fit-head", "logistic", "--store", root / "s.h5", "--out", root / "head", "-q").exit_code == 0
    assert embed("anomalies", "--store", root / "s.h5", "--save", root / "det", "-q").exit_code == 0
    return root


def _edit_json(folder, name, change):
    """Change the JSON and record the checksum of the changed content (as a writer with a bug
    would), so that the change reaches the checks behind the content checksum; an edit that leaves
    the checksum as it was is refused before them (test_head_file_integrity)."""
    from embedstore.modelfile import content_sha256

    doc = json.loads((folder / name).read_text())
    change(doc)
    doc["content_sha256"] = content_sha256(doc)
    (folder / name).write_text(json.dumps(doc))


CASES = {
    "one class fewer": lambda d: d.update(classes=d["classes"][:2]),
    "one class more": lambda d: d.update(classes=d["classes"] + ["emu"]),
    "huge n_features": lambda d: d.update(n_features=10**9),
    "another n_features": lambda d: d.update(n_features=d["n_features"] + 1),
    "another kind": lambda d: d.update(kind="knn"),
    "bad parameters": lambda d: d.update(params={"C": "lots"}),
    "no provenance": lambda d: d.pop("provenance"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_tampered_head_is_refused_in_one_line(saved, tmp_path, case):
    h = tmp_path / "head"
    shutil.copytree(saved / "head", h)
    _edit_json(h, "head.json", CASES[case])
    for args in (["evaluate", h, "--store", saved / "s.h5"], ["predict", h, saved / "photos", "-q"]):
        r = embed(*args)
        assert r.exit_code == 2, (case, args, r.output)
        assert r.output.startswith("error: ") and len(r.output.strip().splitlines()) == 1, (case, r.output)


@pytest.mark.parametrize("case", ["huge n_features", "another n_features", "bad parameters"])
def test_a_tampered_detector_is_refused_in_one_line(saved, tmp_path, case):
    from embedstore.errors import DetectorError
    from embedstore.modelfile import load_model

    d = tmp_path / "det"
    shutil.copytree(saved / "det", d)
    _edit_json(d, "detector.json", CASES[case] if case != "bad parameters" else lambda doc: doc.update(params={"k": "many"}))
    with pytest.raises(DetectorError) as e:
        load_model(d, "detector")
    assert "\n" not in str(e.value)


def test_a_head_without_provenance_is_not_served_or_finetuned_from(saved, tmp_path):
    from embedstore.errors import HeadError
    from embedstore.serve.server import open_api

    h = tmp_path / "head"
    shutil.copytree(saved / "head", h)
    _edit_json(h, "head.json", CASES["no provenance"])
    with pytest.raises(HeadError, match="records no encoder provenance"):
        open_api(saved / "s.h5", head=str(h))
