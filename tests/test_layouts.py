"""Folder layouts: classes (<class>/...), splits (train|val|test/<class>/...), flat; `auto` never reads
a split folder as a class label. Through open_source, and end to end through `embed build`,
`embed info`, `embed fit-head` and `embed predict`."""

import json
from pathlib import Path

import numpy as np
import pytest

from embedstore.errors import SourceError
from embedstore.heads.splits import _ALIASES
from embedstore.sources import open_source
from embedstore.sources.folder import LINKED_TWICE, STORE_INSIDE
from embedstore.sources.items import SPLIT_NAMES

from conftest import embed, make_image_folder, write_image

TINY = ("--encoder", "test:tiny", "--precision", "fp32", "--workers", 0, "--batch-size", 8, "-q")


def make_split_folder(root: Path, splits=(("train", 4), ("val", 2), ("test", 2)), classes=("cat", "dog")) -> Path:
    for k, (split, per_class) in enumerate(splits):
        make_image_folder(root / split, classes=classes, per_class=per_class, seed=k + 1)
    return root


def test_kaggles_training_set_and_test_set_are_splits_that_heads_read_as_such(tmp_path):
    """training_set/test_set/{cats,dogs} (Kaggle's cats and dogs) gave two classes, 'training_set' and
    'test_set', without a word, and --layout splits refused it. They are the train and test splits,
    read by the heads from the one list of split names."""
    assert _ALIASES is SPLIT_NAMES  # one list: a folder read as a split is a split the heads understand
    root = make_split_folder(tmp_path / "ds", splits=(("training_set", 4), ("test_set", 2)), classes=("cats", "dogs"))
    src = open_source(root)
    assert src.layout == "splits" and {i.split for i in src.items} == {"training_set", "test_set"}
    assert {i.label for i in src.items} == {"cats", "dogs"}
    from embedstore.heads.splits import TEST, TRAIN, assign_splits

    codes, _ = assign_splits(np.array(["cats", "dogs"] * 2), np.array(["training_set", "training_set", "test_set", "test_set"]),
                             0.0, 0.0, 0)
    assert codes.tolist() == [TRAIN, TRAIN, TEST, TEST]


def test_auto_reads_split_folders_as_splits_with_class_labels(tmp_path):
    root = make_split_folder(tmp_path / "ds")
    (root / "LICENSE.txt").write_text("top level")
    src = open_source(root)
    assert src.layout == "splits" and src.has_splits and src.has_labels
    got = {(i.split, i.label) for i in src.items}
    assert got == {(s, c) for s in ("train", "val", "test") for c in ("cat", "dog")}
    assert all(i.id == f"{i.split}/{i.label}/{Path(i.uri).name}" for i in src.items)  # unique across splits
    assert len({i.id for i in src.items}) == len(src) == 16
    assert src.skipped == {"top-level file outside any split folder": [str(root / "LICENSE.txt")]}
    assert src.describe_layout()["split_counts"] == {"train": 8, "val": 4, "test": 4}


def test_split_aliases_are_kept_as_written(tmp_path):
    root = make_split_folder(tmp_path / "ds", splits=(("Training", 2), ("valid", 1), ("holdout", 1)))
    src = open_source(root)
    assert {i.split for i in src.items} == {"Training", "valid", "holdout"}
    assert list(src.describe_layout()["split_counts"]) == ["Training", "valid", "holdout"]


def test_split_folders_without_classes_give_unlabelled_items(tmp_path):
    make_image_folder(tmp_path / "ds" / "train", per_class=2)
    for i in range(3):
        write_image(tmp_path / "ds" / "test" / f"{i}.jpg", seed=i)
    src = open_source(tmp_path / "ds")
    test = [i for i in src.items if i.split == "test"]
    assert [i.id for i in test] == ["test/0.jpg", "test/1.jpg", "test/2.jpg"] and all(i.label is None for i in test)
    assert {i.label for i in src.items if i.split == "train"} == {"cat", "dog"}


def test_mixed_top_level_is_refused_by_auto(tmp_path):
    root = make_split_folder(tmp_path / "ds", splits=(("train", 1), ("val", 1)))
    make_image_folder(root, classes=("owl",), per_class=1)
    with pytest.raises(SourceError) as e:
        open_source(root)
    msg = str(e.value)
    assert "\n" not in msg and "(train, val)" in msg and "(owl)" in msg and "--layout classes" in msg
    # an explicit --layout splits reads the split folders and says which folder it skipped
    src = open_source(root, layout="splits")
    assert {i.split for i in src.items} == {"train", "val"}
    assert src.skipped == {"top-level folder that is not a split name": [str(root / "owl")]}


def test_classes_layout_keeps_the_old_reading(tmp_path):
    root = make_split_folder(tmp_path / "ds")
    src = open_source(root, layout="classes")
    assert src.layout == "classes" and not src.has_splits
    assert {i.label for i in src.items} == {"train", "val", "test"} and all(i.split is None for i in src.items)


@pytest.mark.parametrize("kw, match", [
    (dict(layout="splits"), r"--layout splits: .* no split folder at its top level \(found: cat, dog\)"),
    (dict(layout="rows"), "--layout must be one of auto, classes, splits, flat, not 'rows'"),
    (dict(layout="splits", labels=False), "--no-labels means --layout flat"),
])
def test_layouts_that_cannot_be_read(tmp_path, kw, match):
    root = make_image_folder(tmp_path / "p", per_class=1)
    with pytest.raises(SourceError, match=match):
        open_source(root, **kw)


def test_layout_on_a_manifest_is_refused(tmp_path):
    write_image(tmp_path / "a.jpg")
    (tmp_path / "m.csv").write_text("path\na.jpg\n")
    assert open_source(tmp_path / "m.csv").layout == "manifest"
    with pytest.raises(SourceError, match="applies to folders"):
        open_source(tmp_path / "m.csv", layout="splits")


def test_build_info_and_fit_head_on_a_split_folder(tmp_path):
    root = make_split_folder(tmp_path / "ds")
    store = tmp_path / "s.h5"
    r = embed("build", root, "--store", store, *TINY[:-1])
    assert r.exit_code == 0, r.output
    assert "layout: splits (train 8, val 4, test 4 listed; 2 classes: cat, dog) from folder names (--layout auto)" in r.output
    r = embed("info", store, "--json")
    d = json.loads(r.output)
    assert d["split_label_counts"] == {"test": {"cat": 2, "dog": 2}, "train": {"cat": 4, "dog": 4}, "val": {"cat": 2, "dog": 2}}
    assert d["labels"] == {"cat": 8, "dog": 8}
    text = embed("info", store).output
    assert "    train    4    4      8" in text and "    total    8    8     16" in text
    r = embed("fit-head", "logistic", "--store", store, "--out", tmp_path / "h", "--json", "-q")
    assert r.exit_code == 0, r.output
    fit = json.loads(r.output)
    assert fit["split_how"] == "the store's split column" and fit["counts"] == {"train": 8, "val": 4, "test": 4}


def test_build_refuses_a_mixed_top_level_before_writing(tmp_path):
    root = make_split_folder(tmp_path / "ds", splits=(("train", 1), ("test", 1)))
    make_image_folder(root, classes=("owl",), per_class=1)
    r = embed("build", root, "--store", tmp_path / "s.h5", *TINY)
    assert r.exit_code != 0
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and "mixes split folders (test, train) with other folders (owl)" in lines[0]
    assert not (tmp_path / "s.h5").exists() and not (tmp_path / "s.h5.d").exists()


def test_build_layout_classes_reads_split_folders_as_labels(tmp_path):
    root = make_split_folder(tmp_path / "ds", splits=(("train", 2), ("val", 1)))
    r = embed("build", root, "--store", tmp_path / "s.h5", "--layout", "classes", *TINY[:-1])
    assert r.exit_code == 0, r.output
    assert "layout: classes (2 classes: train 4, val 2 listed) from folder names (--layout classes)" in r.output
    d = json.loads(embed("info", tmp_path / "s.h5", "--json").output)
    assert d["labels"] == {"train": 4, "val": 2} and d["splits"] == {}
    assert d["split_label_counts"] == {"": {"train": 4, "val": 2}}


@pytest.mark.parametrize("flag", [(), ("--no-labels",), ("--layout", "flat")])
def test_flat_folder_builds_and_predicts(tmp_path, flag):
    flat = tmp_path / "flat"
    for i in range(3):
        write_image(flat / f"{i}.jpg", colour=(200, 60, 40), seed=i)
    r = embed("build", flat, "--store", tmp_path / "f.h5", *flag, *TINY[:-1])
    assert r.exit_code == 0, r.output
    assert "layout: flat (no labels) from " in r.output
    if flag:
        return
    make_image_folder(tmp_path / "photos", per_class=4)
    assert embed("build", tmp_path / "photos", "--store", tmp_path / "p.h5", *TINY).exit_code == 0
    r = embed("fit-head", "logistic", "--store", tmp_path / "p.h5", "--out", tmp_path / "h", "-q")
    assert r.exit_code == 0, r.output
    r = embed("predict", tmp_path / "h", flat, "--out", tmp_path / "x.csv", "-q")
    assert r.exit_code == 0, r.output
    rows = (tmp_path / "x.csv").read_text().splitlines()
    assert len(rows) == 4 and all(row.split(",")[0] in ("id", "0.jpg", "1.jpg", "2.jpg") for row in rows)


def test_split_label_table_orders_splits_and_counts_unlabelled():
    from embedstore.cli.info import split_label_table

    lines = split_label_table({"test": {"": 3}, "train": {"cat": 2, "dog": 1}, "": {"cat": 1}})
    assert lines == [
        "            cat  dog  (no label)  total",
        "train         2    1           0      3",
        "test          0    0           3      3",
        "(no split)    1    0           0      1",
        "total         3    1           3      7",
    ]


def test_symlinked_class_folders_are_read_and_loops_are_skipped_and_said(tmp_path):
    import os

    photos = make_image_folder(tmp_path / "photos", classes=("cat",), per_class=3)
    make_image_folder(tmp_path / "elsewhere", classes=("dog",), per_class=2)
    os.symlink(tmp_path / "elsewhere" / "dog", photos / "dog")  # photos/dog -> a folder outside
    os.symlink(photos, photos / "cat" / "up")  # a loop back to the top
    src = open_source(photos)
    assert sorted(i.label for i in src.items) == ["cat"] * 3 + ["dog"] * 2
    (loop,) = src.skipped["folder already read by another path (a symlink loop, or a second link to it)"]
    assert loop.endswith("cat/up")
    # the build summary names it, as the README says
    r = embed("build", photos, "--store", tmp_path / "s.h5", "--encoder", "test:tiny", "--precision", "fp32", "-q")
    assert r.exit_code == 0, r.output
    assert f"skipped 1 (folder already read by another path (a symlink loop, or a second link to it)): {loop}" in r.output, r.output


def test_a_store_kept_inside_its_source_folder_is_not_read_as_items(tmp_path):
    """`embed build photos --store photos/store.h5`: the store's catalog and data folder (shards,
    index, lock) are skipped and said, not quarantined as items of a class 'store.h5.d'."""
    photos = make_image_folder(tmp_path / "photos", classes=("cat", "dog"), per_class=3)
    for _ in range(2):
        r = embed("build", photos, "--store", photos / "store.h5", "--encoder", "test:tiny", "--precision", "fp32", "-q")
        assert r.exit_code == 0, r.output
    src = open_source(photos)
    assert sorted({i.label for i in src.items}) == ["cat", "dog"] and len(src.items) == 6
    assert sorted(Path(p).name for p in src.skipped[STORE_INSIDE]) == ["store.h5", "store.h5.d"]
    assert "; quarantined 0\n" in r.output and "store.h5.d" not in r.output.split("skipped")[0]
    info = json.loads(embed("info", photos / "store.h5", "--json").stdout)
    assert info["items"] == info["ok"] == 6 and info["quarantined"] == 0
    r = embed("build", photos, "--store", photos, "--encoder", "test:tiny")  # the folder itself as the store
    assert r.exit_code == 2 and f"e.g. {photos}.h5 for a new one" in r.stderr


def test_loose_images_beside_one_subfolder_are_skipped_with_the_fix_and_one_class_is_said_as_such(tmp_path):
    """A flat folder with one stray subfolder was read as a class layout: the skip line named the
    loose images but not --layout flat, and the layout line said "1 classes"."""
    root = tmp_path / "flat"
    for i in range(3):
        write_image(root / f"{i}.jpg", seed=i)
    write_image(root / "misc" / "x.png", seed=9)
    store = tmp_path / "s.h5"
    r = embed("build", root, "--store", store, *TINY)
    assert r.exit_code == 0, r.output
    assert ("skipped 3 (top-level file outside any class folder): " + ", ".join(str(root / f"{i}.jpg") for i in range(3))
            + "; the subfolder(s) made this a class layout; for a flat folder of images, pass --layout flat") in r.output
    assert "layout: classes (1 class: misc 1 listed)" in r.output and "1 new vector in set" in r.output, r.output
    d = json.loads(embed("build", root, "--store", tmp_path / "j.h5", *TINY, "--json").stdout)
    assert "--layout flat" in d["skipped_fix"]["top-level file outside any class folder"]
    r = embed("build", root, "--store", tmp_path / "f.h5", *TINY, "--layout", "flat")
    assert r.exit_code == 0 and "4 new vectors" in r.output and "skipped" not in r.output, r.output


def test_class_folders_holding_split_folders_give_both_label_and_split(tmp_path):
    """<class>/train/... read the class and dropped the split: every item unsplit, the held-out images
    mixed into training. Now the split comes from the folder inside the class folder."""
    root = tmp_path / "ds"
    for c in ("cat", "dog"):
        make_image_folder(root / c, classes=("train",), per_class=3)
        make_image_folder(root / c, classes=("test",), per_class=1, seed=5)
    write_image(root / "cat" / "loose.jpg", seed=7)
    for layout in ("auto", "classes"):
        src = open_source(root, layout=layout)
        assert src.layout == "classes" and src.has_splits and src.has_labels
        # a file directly in a class folder keeps its label, with no split (it was embedded so before)
        assert {(i.label, i.split) for i in src.items} == {(c, s) for c in ("cat", "dog") for s in ("test", "train")} | {("cat", None)}
        assert [i.id for i in src.items if i.split is None] == ["cat/loose.jpg"]
        assert src.describe_layout()["split_counts"]["train"] == 6 and src.describe_layout()["split_counts"]["test"] == 2
        assert src.skipped == {}
        assert "<class>/<split>/" in src.layout_from
    with pytest.raises(SourceError, match=r"class folders hold split folders, e\.g\. cat/test"):
        open_source(root, layout="splits")
    r = embed("build", root, "--store", tmp_path / "s.h5", *TINY)
    assert r.exit_code == 0 and "layout: classes (train 6, test 2" in r.output and "2 classes: cat, dog" in r.output, r.output


@pytest.mark.parametrize("odd", ["beside", "without"])
def test_split_folders_in_only_some_class_folders_are_refused_in_one_line(tmp_path, odd):
    root = tmp_path / "ds"
    make_image_folder(root / "cat", classes=("train", "test"), per_class=2)
    make_image_folder(root / "dog", classes=("train",) if odd == "without" else ("train", "puppies"), per_class=2)
    if odd == "without":
        make_image_folder(root, classes=("owl",), per_class=2)
    with pytest.raises(SourceError) as e:
        open_source(root)
    msg = str(e.value)
    assert "\n" not in msg and "expected every class folder to hold only split folders (<class>/<split>/...)" in msg
    assert ("other folders beside them (dog/puppies)" if odd == "beside" else "class folders without them (owl)") in msg
    r = embed("build", root, "--store", tmp_path / "s.h5", *TINY)
    assert r.exit_code == 2 and "split and class cannot be told apart" in r.stderr
    src = open_source(root, layout="classes")  # asked for: the labels alone, as the message offers
    assert not src.has_splits and {i.split for i in src.items} == {None} and "dog" in {i.label for i in src.items}


def test_a_symbolic_link_to_a_file_already_in_the_source_is_skipped_and_names_the_id_it_repeats(tmp_path):
    """photos/dog/same.jpg -> ../cat/cat_000.jpg was embedded again under its own id: one file, two
    items, two vectors. Each file is read once, whichever path sorts first. Links to a file outside
    the source are all read: content-addressed storage (git-annex, DVC) links every file of the same
    bytes to one object, and those are distinct items."""
    import os

    photos = make_image_folder(tmp_path / "photos", classes=("cat", "dog"), per_class=2)
    os.symlink("../cat/cat_000.jpg", photos / "dog" / "same.jpg")
    os.symlink("cat_001.png", photos / "cat" / "a_first.png")  # sorts before its target
    outside = write_image(tmp_path / "outside.png", seed=8)
    os.symlink(outside, photos / "dog" / "out1.png")
    os.symlink(outside, photos / "dog" / "out2.png")
    src = open_source(photos)
    ids = [i.id for i in src.items]
    assert ids == ["cat/cat_000.jpg", "cat/cat_001.png", "dog/dog_000.jpg", "dog/dog_001.png", "dog/out1.png", "dog/out2.png"]
    assert src.skipped == {LINKED_TWICE: [f"{photos / 'cat' / 'a_first.png'} -> cat/cat_001.png",
                                          f"{photos / 'dog' / 'same.jpg'} -> cat/cat_000.jpg"]}  # in walk order
    r = embed("build", photos, "--store", tmp_path / "s.h5", *TINY)
    assert r.exit_code == 0 and "6 new vectors" in r.output, r.output
    assert f"skipped 2 ({LINKED_TWICE}): {photos / 'cat' / 'a_first.png'} -> cat/cat_001.png" in r.output


def test_store_items_from_files_a_rebuild_no_longer_reads_are_counted(tmp_path):
    """Items a store holds from files under the folder that the listing now skips (read flat before,
    a class layout now; or links a build before this one embedded) stayed in the store unmentioned:
    the summary counts them and says how to list them; --exclude'd ones are not counted."""
    photos = make_image_folder(tmp_path / "photos", classes=("cat", "dog"), per_class=2)
    write_image(photos / "loose.png", seed=9)
    assert embed("build", photos, "--store", tmp_path / "s.h5", *TINY, "--layout", "flat").exit_code == 0
    r = embed("build", photos, "--store", tmp_path / "s.h5", *TINY, "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    (note,) = [n for n in d["notes"] if "does not read" in n]
    assert note.startswith("1 item(s) of the store are from files under it that this build does not read") and "loose.png" in note
    assert f"embed ls {tmp_path / 's.h5'} --not-in {photos}" in note
    (tmp_path / "x.txt").write_text("loose.png\n")
    r = embed("build", photos, "--store", tmp_path / "s.h5", *TINY, "--layout", "flat", "--exclude", tmp_path / "x.txt", "--json")
    assert r.exit_code == 0 and not any("does not read" in n or "not listed" in n for n in json.loads(r.stdout)["notes"]), r.output


def test_files_read_under_new_ids_are_not_counted_as_unread_and_a_skipped_link_is_listed_once(tmp_path):
    """Building photos/cat, then photos/: the three cat files are read again (as cat/...), so no
    'does not read' note; a link the layout skips already (a loose top-level file) is not also
    listed as a duplicate link."""
    import os

    photos = make_image_folder(tmp_path / "photos", classes=("cat", "dog"), per_class=2)
    assert embed("build", photos / "cat", "--store", tmp_path / "s.h5", *TINY).exit_code == 0
    r = embed("build", photos, "--store", tmp_path / "s.h5", *TINY, "--json")
    assert r.exit_code == 0 and not any("does not read" in n for n in json.loads(r.stdout)["notes"]), r.output
    os.symlink("cat/cat_000.jpg", photos / "top.jpg")
    os.symlink("../cat/cat_000.jpg", photos / "dog" / "alias.jpg")
    src = open_source(photos)
    assert src.skipped["top-level file outside any class folder"] == [str(photos / "top.jpg")]
    assert src.skipped[LINKED_TWICE] == [f"{photos / 'dog' / 'alias.jpg'} -> cat/cat_000.jpg"]
