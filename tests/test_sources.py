from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedstore.errors import SourceError
from embedstore.sources import open_source

from conftest import make_image_folder, write_image


def test_folder_labels_from_subfolders(tmp_path):
    root = make_image_folder(tmp_path / "p", classes=("cat", "dog"), per_class=3)
    (root / ".DS_Store").write_text("x")
    (root / "README.txt").write_text("top level")
    src = open_source(root)
    assert sorted({i.label for i in src.items}) == ["cat", "dog"]
    assert len(src) == 6
    assert all(i.id == f"{i.label}/{Path(i.uri).name}" for i in src.items)
    assert src.skipped == {"hidden file": [str(root / ".DS_Store")], "top-level file outside any class folder": [str(root / "README.txt")]}


def test_flat_folder_without_labels(tmp_path):
    for i in range(3):
        write_image(tmp_path / "flat" / f"{i}.jpg", seed=i)
    with pytest.raises(SourceError, match="--layout flat"):
        open_source(tmp_path / "flat", layout="classes")
    for src in (open_source(tmp_path / "flat"), open_source(tmp_path / "flat", labels=False)):
        assert [i.id for i in src.items] == ["0.jpg", "1.jpg", "2.jpg"] and all(i.label is None for i in src.items)
        assert src.layout == "flat" and not src.has_labels


@pytest.mark.parametrize("kind", ["missing", "empty", "bad-suffix"])
def test_bad_sources(tmp_path, kind):
    if kind == "missing":
        path, match = tmp_path / "nope", "does not exist"
    elif kind == "empty":
        (tmp_path / "empty").mkdir()
        path, match = tmp_path / "empty", "no files to embed"
    else:
        path = tmp_path / "x.json"
        path.write_text("{}")
        match = "unknown kind"
    with pytest.raises(SourceError, match=match):
        open_source(path)


def _manifest_rows(tmp_path):
    for i in range(4):
        write_image(tmp_path / "imgs" / f"{i}.jpg", seed=i)
    return [{"path": f"imgs/{i}.jpg", "label": "a" if i < 2 else "b", "split": "train" if i % 2 else "TEST", "id": f"img_{i:05d}"} for i in range(4)]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_manifest(tmp_path, fmt):
    rows = _manifest_rows(tmp_path)
    path = tmp_path / f"m.{fmt}"
    if fmt == "csv":
        path.write_text("path,label,split,id\n" + "\n".join(f"{r['path']},{r['label']},{r['split']},{r['id']}" for r in rows) + "\n")
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    src = open_source(path)
    assert [i.id for i in src.items] == ["img_00000", "img_00001", "img_00002", "img_00003"]
    assert [i.split for i in src.items] == ["test", "train", "test", "train"]
    assert src.items[0].uri == str((tmp_path / "imgs" / "0.jpg").resolve())
    assert src.has_labels and src.has_splits


@pytest.mark.parametrize(
    "content, match",
    [
        ("file,label\nimgs/0.jpg,a\n", "no 'path' column \\(images\\) or 'text' column \\(texts\\) \\(found: file, label\\)"),
        ("Text,label\nhello,a\n", "column names are case-sensitive: rename 'Text' to 'text'"),
        ("text;label\nhello;a\n", "reads as one column 'text;label': a CSV here is comma-separated"),
        ("", "is empty; a CSV here has a header row"),
        ('text,label\nok,a\n"open,a\nfoo,b\n', "not a readable CSV \\(the row starting at line 3\\): unexpected end of data"),
        ("path,label\nimgs/missing.jpg,b\n", "1 file\\(s\\) that do not exist, e.g. imgs/missing.jpg"),  # one missing of many: quarantined
        ("path,id\nimgs/0.jpg,x\nimgs/1.jpg,x\n", "id 'x' twice"),
        ("path,label\n", "no rows"),
    ],
)
def test_manifest_errors(tmp_path, content, match):
    _manifest_rows(tmp_path)
    path = tmp_path / "m.csv"
    path.write_text(content)
    with pytest.raises(SourceError, match=match):
        open_source(path)


def test_a_utf16_csv_is_named_as_such(tmp_path):
    (tmp_path / "u16.csv").write_bytes("text,label\nhello,a\n".encode("utf-16"))
    with pytest.raises(SourceError, match="is UTF-16 text; save it as UTF-8"):
        open_source(tmp_path / "u16.csv")


def test_item_table_reads_back_what_was_appended_across_chunks(monkeypatch):
    """Sources keep their items column-wise (sources/table.py); every way of reading them gives the
    Items that went in, including across chunk boundaries and the unfrozen tail."""
    import embedstore.sources.table as table
    from embedstore.sources import Item

    monkeypatch.setattr(table, "CHUNK", 7)
    items = [Item(id=f"i{k}", uri=(f"/data/x{k % 3}/f{k}.jpg" if k % 4 else f"/t/texts.txt#L{k}"),
                  label=None if k % 5 == 0 else f"c{k % 2}", split="train" if k % 2 else None,
                  text=f"text {k}" if k % 4 == 0 else None, problem="bad" if k == 11 else None,
                  meta='{"a":"1"}' if k == 3 else None) for k in range(31)]
    t = table.ItemTable(items)
    assert len(t) == 31 and list(t) == items and t[-1] == items[-1] and t[5:19:3] == items[5:19:3]
    assert [t[k] for k in (30, 0, 14, 13, 29, 6)] == [items[k] for k in (30, 0, 14, 13, 29, 6)]
    for name in ("id", "uri", "label", "split", "text", "problem", "meta"):
        assert list(t.column(name)) == [getattr(it, name) for it in items]
    assert list(t.where(lambda it: it.label == "c1")) == [it for it in items if it.label == "c1"]
    assert t.repeated_id() is None
    t.append(Item(id="i9", uri="/elsewhere/i9.jpg"))
    assert t.repeated_id() == ("i9", items[9].uri, "/elsewhere/i9.jpg")
    with pytest.raises(IndexError):
        t[32]


def test_system_files_broken_links_and_empty_folders_are_skipped_with_their_own_reasons(tmp_path):
    """Thumbs.db was quarantined ("empty file") where .DS_Store was skipped; a broken symbolic link
    was "not a regular file"; an empty folder was not mentioned, and beside loose images it made the
    folder read as class folders (every image skipped)."""
    import os

    root = make_image_folder(tmp_path / "p", classes=("cat", "dog"), per_class=2)
    (root / "cat" / "Thumbs.db").write_bytes(b"")
    (root / "dog" / "desktop.ini").write_text("[.ShellClassInfo]")
    os.symlink(tmp_path / "nowhere.png", root / "cat" / "gone.png")
    (root / "owl").mkdir()
    src = open_source(root)
    assert len(src) == 4 and sorted({i.label for i in src.items}) == ["cat", "dog"]
    assert src.skipped == {"system file (Windows thumbnail cache or folder settings)": [str(root / "cat" / "Thumbs.db"),
                                                                                        str(root / "dog" / "desktop.ini")],
                           "broken symbolic link (its target does not exist)": [str(root / "cat" / "gone.png")],
                           "empty folder (no files under it)": [str(root / "owl")]}
    loose = tmp_path / "loose"
    for i in range(3):
        write_image(loose / f"{i}.jpg", seed=i)
    (loose / "later").mkdir()
    src = open_source(loose)
    assert src.layout == "flat" and len(src) == 3


def test_a_symbolic_link_loop_anywhere_is_skipped_with_its_reason_not_the_end_of_the_build(tmp_path):
    """A loop at the top level or in a split folder stopped the build ("unexpected OSError: Too many
    levels of symbolic links", exit 1, nothing stored); one in a class folder was called broken."""
    import os

    root = make_image_folder(tmp_path / "p", classes=("cat", "dog"), per_class=2)
    os.symlink("b.jpg", root / "a.jpg"), os.symlink("a.jpg", root / "b.jpg")
    os.symlink("y", root / "cat" / "x"), os.symlink("x", root / "cat" / "y")
    src = open_source(root)
    assert len(src) == 4 and src.skipped["symbolic link loop (it leads back to itself)"] == [
        str(root / p) for p in ("a.jpg", "b.jpg", "cat/x", "cat/y")]
    splits = tmp_path / "s"
    make_image_folder(splits / "train", per_class=3), make_image_folder(splits / "val", per_class=1)
    os.symlink("l2", splits / "train" / "l1"), os.symlink("l1", splits / "train" / "l2")
    src = open_source(splits)
    assert src.layout == "splits" and len(src) == 8 and len(src.skipped["symbolic link loop (it leads back to itself)"]) == 2


def test_manifest_rows_that_are_folders_urls_or_broken_links_say_so_and_keep_their_label(tmp_path):
    import os

    folder = make_image_folder(tmp_path / "p", classes=("cat",), per_class=1)
    os.symlink(tmp_path / "nowhere.png", tmp_path / "broken.png")
    (tmp_path / "m.csv").write_text("path,label\n" + f"{next((folder / 'cat').iterdir())},cat\n"
                                    f"{folder / 'cat'},cat\nhttps://example.com/a.jpg,web\nbroken.png,b\n")
    items = {i.uri: i for i in open_source(tmp_path / "m.csv").items}
    assert "is a folder, not a file: list its files one a row" in items[str(folder / "cat")].problem
    assert "is a URL: a manifest lists local files" in items["https://example.com/a.jpg"].problem
    assert "file not found: broken.png (a broken symbolic link)" in items["broken.png"].problem
    assert (items[str(folder / "cat")].label, items["https://example.com/a.jpg"].label) == ("cat", "web")


def test_a_nas_thumbnail_folder_is_not_a_class_nor_items(tmp_path):
    """Synology keeps thumbnails in @eaDir beside the photos: they were embedded, at the top level as
    a class "@eaDir". System folders are skipped and listed, as Thumbs.db is."""
    root = make_image_folder(tmp_path / "p", classes=("cat", "dog"), per_class=2)
    write_image(root / "@eaDir" / "x.jpg" / "SYNOPHOTO_THUMB_M.jpg", seed=1)
    write_image(root / "cat" / "@eaDir" / "cat_000.jpg" / "SYNOPHOTO_THUMB_M.jpg", seed=2)
    write_image(root / "__MACOSX" / "cat" / "x.jpg", seed=3)
    src = open_source(root)
    assert len(src) == 4 and sorted({i.label for i in src.items}) == ["cat", "dog"]
    assert sorted(src.skipped["system folder (NAS thumbnails, archive metadata or a recycle bin)"]) == sorted(
        str(p) for p in (root / "@eaDir", root / "cat" / "@eaDir", root / "__MACOSX"))


def test_a_broken_link_in_a_queries_folder_is_listed_as_skipped_not_dropped(tmp_path, build_tiny):
    """`embed search --queries DIR`: a symbolic link that leads nowhere was left out of the queries
    without a word; it is now listed with the other queries that could not be used."""
    import os

    from embedstore.search.batch import search_batch
    from embedstore.sources.queries import read_queries

    photos = make_image_folder(tmp_path / "photos", classes=("cat",), per_class=4)
    build_tiny(photos, tmp_path / "s.h5")
    q = tmp_path / "q"
    write_image(q / "a.png", seed=1)
    os.symlink(tmp_path / "nowhere.png", q / "gone.png")
    os.symlink("loop2.png", q / "loop1.png"), os.symlink("loop1.png", q / "loop2.png")
    kind, items, _ = read_queries(q)
    assert kind == "image" and [n for n, _ in items] == ["a.png", "gone.png", "loop1.png", "loop2.png"]
    r = search_batch(tmp_path / "s.h5", q, tmp_path / "hits.csv", k=2, progress=False)
    assert r.queries == 1 and [s["query"] for s in r.skipped] == ["gone.png", "loop1.png", "loop2.png"]
    assert str(q / "gone.png") in r.skipped[0]["reason"]
