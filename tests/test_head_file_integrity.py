"""A saved head's head.json (and a saved detector's detector.json) records the sha256 of its own
content, so an edit made after saving (a renamed label, another temperature, one flipped byte in a
string) is refused in one line by every door that loads it, as a changed arrays file already is.
Heads saved before the checksum (formats 1 and 2) are read as before."""

from __future__ import annotations

import hashlib
import json
import re
import shutil

import pytest

from conftest import embed, make_image_folder

CLASSES = ("cat", "dog", "owl")
CHECKSUM = "content_sha256"
CHANGED = "was changed after it was saved (its content checksum does not match); re-run `embed fit-head` to make a new head"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("head-integrity")
    make_image_folder(root / "photos", classes=CLASSES, per_class=6)
    assert embed("build", root / "photos", "--store", root / "s.h5", "--encoder", "test:tiny", "--precision", "fp32",
                 "-q").exit_code == 0
    assert embed("fit-head", "logistic", "--store", root / "s.h5", "--out", root / "head", "-q").exit_code == 0
    assert embed("anomalies", "--store", root / "s.h5", "--save", root / "det", "-q").exit_code == 0
    return root


@pytest.fixture
def head(saved, tmp_path):
    """A copy of the saved head, free to change."""
    return shutil.copytree(saved / "head", tmp_path / "head")


def _canonical_sha256(doc: dict) -> str:
    """The sha256 of every field but the checksum, as JSON with sorted keys and no whitespace."""
    rest = {k: v for k, v in doc.items() if k != CHECKSUM}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _labels(r) -> list[str]:
    return [row["label"] for row in json.loads(r.stdout)["rows"]]


def _rename_label(text: str) -> str:  # what `sed -i 's/"owl"/"lwo"/' head.json` does
    assert '"owl"' in text
    return text.replace('"owl"', '"lwo"')


def _change_temperature(text: str) -> str:  # "temperature": 2.7e-05 -> 5.0: flattened probabilities
    changed, n = re.subn(r'"temperature": [^,\n]+', '"temperature": 5.0', text)
    assert n == 1 and changed != text
    return changed


def _flip_a_byte_in_a_string(text: str) -> str:
    """One bit of one byte of the first class name flipped ("cat" -> "bat"): still valid JSON."""
    data = bytearray(text.encode())
    at = data.index(b'"classes": [') + data[data.index(b'"classes": ['):].index(b'"cat"') + 1
    data[at] ^= 0x01
    changed = data.decode()
    assert json.loads(changed)["classes"][0] == "bat"
    return changed


EDITS = {"label renamed": _rename_label, "temperature changed": _change_temperature,
         "byte flipped in a string": _flip_a_byte_in_a_string}


def test_a_saved_head_records_its_content_checksum_and_loads_and_predicts(saved, head):
    from embedstore.modelfile import load_head

    doc = json.loads((head / "head.json").read_text())
    assert doc["version"] == 3 and doc.get(CHECKSUM) == _canonical_sha256(doc)
    loaded, back = load_head(head)
    assert back == doc and [str(c) for c in loaded.classes_] == list(CLASSES)
    r = embed("predict", head, saved / "photos", "--json", "-q")
    assert r.exit_code == 0, r.output
    assert sorted(set(_labels(r))) == list(CLASSES)


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_an_edited_head_json_is_refused_in_one_line_by_every_door(saved, head, edit):
    from embedstore.errors import HeadError
    from embedstore.modelfile import load_head
    from embedstore.serve.server import open_api

    path = head / "head.json"
    path.write_text(EDITS[edit](path.read_text()))
    json.loads(path.read_text())  # still valid JSON: only the checksum can tell
    for args in (["predict", head, saved / "photos", "-q"], ["evaluate", head, "--store", saved / "s.h5"]):
        r = embed(*args)
        assert r.exit_code == 2, (edit, args, r.output)
        assert r.output.strip() == f"error: {path} {CHANGED}", (edit, args, r.output)
    for door in (lambda: load_head(head), lambda: open_api(saved / "s.h5", head=str(head))):
        with pytest.raises(HeadError) as e:
            door()
        assert str(e.value) == f"{path} {CHANGED}" and "\n" not in str(e.value)


def test_a_head_json_laid_out_differently_with_the_same_content_still_loads(saved, head):
    from embedstore.modelfile import load_head

    doc = json.loads((head / "head.json").read_text())
    relaid = dict(reversed(list(doc.items())))
    (head / "head.json").write_text(json.dumps(relaid, separators=(",", ":")))  # other key order, no whitespace
    _, back = load_head(head)
    assert back == doc and CHECKSUM in back


def test_a_head_json_stripped_of_its_checksum_is_refused(head):
    from embedstore.errors import HeadError
    from embedstore.modelfile import load_head

    doc = json.loads((head / "head.json").read_text())
    assert doc.pop(CHECKSUM, None)
    (head / "head.json").write_text(json.dumps(doc, indent=2))
    with pytest.raises(HeadError, match=r"head\.json was changed after it was saved \(it lacks the content checksum "
                                        r"that format 3 always records\); re-run `embed fit-head`"):
        load_head(head)


def test_an_edited_head_json_downgraded_to_format_2_is_still_refused(head):
    from embedstore.errors import HeadError
    from embedstore.modelfile import load_head

    doc = json.loads((head / "head.json").read_text())
    doc.update(version=2, classes=["cat", "dog", "lwo"])  # the checksum is still there, and checked
    (head / "head.json").write_text(json.dumps(doc, indent=2))
    with pytest.raises(HeadError, match="its content checksum does not match"):
        load_head(head)


@pytest.mark.parametrize("version", [1, 2])
def test_a_head_saved_before_the_checksum_still_loads_and_predicts(saved, head, version):
    """A head of format 1 or 2 (no content_sha256; format 1 also has its arrays in arrays.npz, not
    named in head.json) is read as before: same classes, same predictions."""
    from embedstore.modelfile import ARRAYS, load_head

    doc = json.loads((head / "head.json").read_text())
    assert doc.pop(CHECKSUM, None) == _canonical_sha256(doc)  # what a head saved now has, and these older ones lack
    doc["version"] = version
    if version == 1:
        (head / doc.pop("arrays_file")).rename(head / ARRAYS)
    (head / "head.json").write_text(json.dumps(doc, indent=2, default=str))
    loaded, back = load_head(head)
    assert back == doc and [str(c) for c in loaded.classes_] == list(CLASSES)
    new = embed("predict", saved / "head", saved / "photos", "--json", "-q")
    old = embed("predict", head, saved / "photos", "--json", "-q")
    assert old.exit_code == 0, old.output
    assert _labels(old) == _labels(new)


def test_an_edited_detector_json_is_refused_in_one_line(saved, tmp_path):
    from embedstore.errors import DetectorError
    from embedstore.modelfile import load_model

    det = shutil.copytree(saved / "det", tmp_path / "det")
    doc, _ = json.loads((det / "detector.json").read_text()), load_model(det, "detector")
    assert doc.get(CHECKSUM) == _canonical_sha256(doc)
    doc["threshold"]["contamination"] = 0.5
    (det / "detector.json").write_text(json.dumps(doc, indent=2))
    with pytest.raises(DetectorError) as e:
        load_model(det, "detector")
    assert str(e.value) == (f"{det / 'detector.json'} was changed after it was saved (its content checksum does not "
                            "match); re-run `embed anomalies --save` to make a new detector")
