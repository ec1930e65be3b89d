"""fit-head --exclude FILE [--exclude-kinds K,...]: listed items leave train, val and test; the
report and the saved head say how many left each split and from which file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import embed, make_image_folder

CLASSES = ("cat", "dog", "owl")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from embedstore.ingest import build

    root = tmp_path_factory.mktemp("exclude")
    make_image_folder(root / "photos", classes=CLASSES, per_class=14)
    build(root / "photos", root / "p.h5", encoder="test:tiny", workers=0, precision="fp32", progress=False,
          batch_size=16, shard_rows=16)
    return root / "p.h5"


@pytest.fixture(scope="module")
def splits(store):
    """item id -> split name and content sha, as fit-head assigns them with the default fractions and seed."""
    from embedstore.heads.data import SplitData
    from embedstore.heads.splits import SPLIT_NAMES
    from embedstore.store import open_store

    with open_store(store) as st:
        rows = st.rows(st.select_set().name)
    data = SplitData(rows, 0.15, 0.15, 0, None, 1 << 30)
    split = {str(i): SPLIT_NAMES[int(c)] for i, c in zip(rows.ids, data.codes)}
    return split, dict(zip(map(str, rows.ids), map(str, rows.shas)))


def _pick(split: dict, name: str, k: int) -> list[str]:
    return sorted(i for i, s in split.items() if s == name)[:k]


def test_excluded_items_leave_their_splits_and_the_seen_keys(store, splits, tmp_path):
    from embedstore.evaluation.seen import content_keys
    from embedstore.modelfile import load_head

    split, shas = splits
    base = embed("fit-head", "logistic", "--store", store, "--json", "-q")
    assert base.exit_code == 0, base.output
    base = json.loads(base.output)
    assert base["excluded"] == {}
    test_out, train_out = _pick(split, "test", 2), _pick(split, "train", 3)
    ids = tmp_path / "drop.txt"
    ids.write_text("# from a manual review\n" + "\n".join(test_out + train_out + ["not/in/the/store.jpg"]) + "\n\n")
    r = embed("fit-head", "logistic", "--store", store, "--exclude", ids, "--out", tmp_path / "h", "--json", "-q")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["counts"] == {"train": base["counts"]["train"] - 3, "val": base["counts"]["val"],
                             "test": base["counts"]["test"] - 2}
    assert rep["test"]["n"] == base["test"]["n"] - 2
    ex = rep["excluded"]
    assert ex["per_split"] == {"train": 3, "val": 0, "test": 2} and ex["file"] == str(ids)
    assert ex["ids"] == 6 and ex["removed"] == 5 and ex["not_in_store"] == 1
    assert any("1 of the 6 excluded ids are not in this vector set" in n for n in rep["notes"])
    assert rep["seen_items"] == base["seen_items"] - 3
    head, meta = load_head(tmp_path / "h")
    assert meta["excluded"]["removed_ids"] == sorted(test_out + train_out)
    assert meta["excluded"]["file"] == str(ids)
    keys = set(head.seen_keys_.tolist())
    assert not keys & set(content_keys([shas[i] for i in train_out]).tolist())  # the left-out training items
    kept_train = [i for i, s in split.items() if s in ("train", "val") and i not in train_out]
    assert keys == set(content_keys([shas[i] for i in kept_train]).tolist())

    # the human summary says it too, naming the file
    r = embed("fit-head", "knn", "--store", store, "--exclude", ids, "-q")
    assert r.exit_code == 0, r.output
    assert f"excluded: 6 ids from {ids}: left out of train/val/test: train 3, val 0, test 2; 1 not in this vector set" in r.output


def test_audit_csv_with_kinds_and_the_python_api(store, splits, tmp_path):
    from embedstore.heads.fit import fit_head
    from embedstore.sources.exclusions import read_exclusions

    split, _ = splits
    dup, bad = _pick(split, "test", 3)[:1], _pick(split, "val", 2)
    audit = tmp_path / "audit.csv"
    audit.write_text("id,kind,score,detail\n" + "".join(f"{i},duplicate,1.0,same as x\n" for i in dup)
                     + "".join(f"{i},mislabel,0.9,looks like owl\n" for i in bad))
    r = embed("fit-head", "ridge", "--store", store, "--exclude", audit, "--exclude-kinds", "mislabel", "--json", "-q")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["excluded"]["per_split"] == {"train": 0, "val": 2, "test": 0}
    assert rep["excluded"]["source"] == f"2 ids from {audit} (mislabel 2)"

    # every door takes the same argument: an Exclusions, or a plain set of ids, with the same result
    base, _ = fit_head(store, "logistic", progress=False)
    a, _ = fit_head(store, "logistic", progress=False, exclude=read_exclusions(audit))
    b, _ = fit_head(store, "logistic", progress=False, exclude=set(dup + bad))
    assert a.counts == b.counts == {**base.counts, "val": base.counts["val"] - 2, "test": base.counts["test"] - 1}
    assert set(a.test_predictions) == set(base.test_predictions) - set(dup)
    assert a.test_predictions == b.test_predictions
    assert b.excluded["file"] is None and b.excluded["source"] == "3 ids given by the caller"
    with pytest.raises(TypeError, match="read_exclusions"):
        fit_head(store, "logistic", progress=False, exclude=str(audit))


def test_exclusion_errors_are_one_line_and_save_nothing(store, splits, tmp_path):
    split, _ = splits
    (tmp_path / "noid.csv").write_text("item,kind\na,duplicate\n")
    (tmp_path / "plain.txt").write_text("cat/cat_000.jpg\n")
    # every owl the head would train on, with owls left in val and test: they would be scored by a
    # head never taught the class (a class excluded whole is left out of the head: test below)
    train_owls = [i for i, s in split.items() if i.startswith("owl/") and s == "train"]
    assert any(i.startswith("owl/") and s != "train" for i, s in split.items())
    (tmp_path / "owls.txt").write_text("\n".join(train_owls) + "\n")
    cases = [
        (["--exclude", tmp_path / "missing.csv"], "does not exist"),
        (["--exclude", tmp_path / "noid.csv"], "has no 'id' column (found: item, kind)"),
        (["--exclude-kinds", "duplicate"], "pass --exclude audit.csv too"),
        (["--exclude", tmp_path / "plain.txt", "--exclude-kinds", "duplicate"], "is a plain id list"),
        (["--exclude", tmp_path / "plain.txt", "--exclude-kinds", ","], "names no kind"),
        (["--exclude", tmp_path / "owls.txt"], "class(es) 'owl' have no training items left"),
    ]
    for extra, message in cases:
        out = tmp_path / "head"
        r = embed("fit-head", "logistic", "--store", store, "--out", out, "-q", *extra)
        assert r.exit_code == 2, (extra, r.output)
        assert message in r.output and len(r.output.strip().splitlines()) == 1, (extra, r.output)
        assert "Traceback" not in r.output and not out.exists(), extra
