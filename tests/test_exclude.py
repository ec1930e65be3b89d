"""`--exclude FILE` / `--exclude-kinds` on `embed build` and `embed anomalies`, through the CLI."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import embed, make_image_folder, write_image

TINY = ["--encoder", "test:tiny", "--precision", "fp32", "--workers", "0", "--batch-size", "4", "-q"]


def write_audit(path: Path, rows: list[tuple[str, str]]) -> Path:
    """An `embed audit --out` CSV: id, kind, score, detail."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "kind", "score", "detail"])
        for item, kind in rows:
            w.writerow([item, kind, 1.0, "planted"])
    return path


def snapshot(store: Path) -> dict[str, str]:
    """sha256 of the store file and of every file in its sidecar folder."""
    from embedstore.store import sidecar_dir

    files = [store, *(p for p in sidecar_dir(store).rglob("*") if p.is_file())]
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def store_ids(store: Path) -> set[str]:
    from embedstore.store import open_store

    with open_store(store) as st:
        (vs,) = st.vector_sets()
        return set(map(str, st.rows(vs.name).ids))


def build_cli(src, store, *extra):
    return embed("build", src, "--store", store, *TINY, *extra)


# --- embed build --exclude ----------------------------------------------------------------------


def test_build_leaves_listed_ids_out_and_says_so(image_folder, tmp_path):
    ids_file = tmp_path / "drop.txt"
    ids_file.write_text("# audit picks\ncat/cat_000.jpg\n\ndog/dog_001.png\nnot/in/source.jpg\n")
    store = tmp_path / "s.h5"
    r = build_cli(image_folder, store, "--exclude", ids_file)
    assert r.exit_code == 0, r.output
    assert f"2 items left out by --exclude {ids_file}" in r.output
    assert "1 of them are not in the source" in r.output
    assert "12 items" in r.output and "10 new vectors" in r.output
    ids = store_ids(store)
    assert len(ids) == 10 and "cat/cat_000.jpg" not in ids and "dog/dog_001.png" not in ids

    r = build_cli(image_folder, tmp_path / "j.h5", "--exclude", ids_file, "--json")
    rep = json.loads(r.output)
    assert rep["excluded"] == 2 and rep["encoded"] == 10 and rep["items_in_source"] == 12
    assert rep["exclusions"]["ids"] == 3 and rep["exclusions"]["ids_not_in_source"] == 1
    assert rep["exclusions"]["path"] == str(ids_file)


def test_build_exclude_keeps_items_already_in_the_store(image_folder, tmp_path):
    store = tmp_path / "s.h5"
    assert build_cli(image_folder, store).exit_code == 0
    from embedstore.store import open_store

    with open_store(store) as st:
        (vs,) = st.vector_sets()
        rows = st.rows(vs.name)
        before = dict(zip(map(str, rows.ids), rows.load(np.ones(len(rows), dtype=bool))))
    drop = tmp_path / "drop.txt"
    drop.write_text("cat/cat_002.jpg\n")
    write_image(image_folder / "cat" / "cat_002.jpg", (40, 160, 60), seed=77)  # changed: without --exclude it is re-embedded
    r = build_cli(image_folder, store, "--exclude", drop, "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["excluded"] == 1 and rep["encoded"] == 0 and rep["vectors_in_set"] == 12
    with open_store(store) as st:
        rows = st.rows(vs.name)
        after = dict(zip(map(str, rows.ids), rows.load(np.ones(len(rows), dtype=bool))))
    assert after.keys() == before.keys()
    assert np.array_equal(after["cat/cat_002.jpg"], before["cat/cat_002.jpg"])
    r = build_cli(image_folder, store, "--json")  # without the list the changed file is embedded again
    assert json.loads(r.output)["encoded"] == 1


def test_build_exclude_kinds_takes_only_those_rows(image_folder, tmp_path):
    audit = write_audit(tmp_path / "audit.csv", [("cat/cat_000.jpg", "duplicate"), ("cat/cat_001.png", "duplicate"),
                                                 ("dog/dog_000.jpg", "corrupt"), ("dog/dog_002.jpg", "label-noise")])
    r = build_cli(image_folder, tmp_path / "s.h5", "--exclude", audit, "--exclude-kinds", "duplicate, corrupt")
    assert r.exit_code == 0, r.output
    assert "3 items left out by --exclude" in r.output and "corrupt 1, duplicate 2" in r.output
    ids = store_ids(tmp_path / "s.h5")
    assert len(ids) == 9 and "dog/dog_002.jpg" in ids and "dog/dog_000.jpg" not in ids


def _error_cases(tmp_path: Path) -> list[tuple[list, str]]:
    no_id = tmp_path / "no_id.csv"
    no_id.write_text("item,kind\ncat/cat_000.jpg,duplicate\n")
    no_kind = tmp_path / "no_kind.csv"
    no_kind.write_text("id,score\ncat/cat_000.jpg,1\n")
    plain = tmp_path / "plain.txt"
    plain.write_text("cat/cat_000.jpg\n")
    return [
        (["--exclude", tmp_path / "missing.csv"], "does not exist"),
        (["--exclude", no_id], "has no 'id' column (found: item, kind)"),
        (["--exclude", no_kind, "--exclude-kinds", "duplicate"], "has no 'kind' column"),
        (["--exclude", plain, "--exclude-kinds", "duplicate"], "plain id list"),
        (["--exclude-kinds", "duplicate"], "add --exclude FILE"),
    ]


def test_build_exclude_errors_are_one_line_and_leave_the_store_untouched(image_folder, tmp_path):
    store = tmp_path / "s.h5"
    assert build_cli(make_image_folder(tmp_path / "first", per_class=2), store).exit_code == 0
    before = snapshot(store)
    assert len(before) > 1  # the store file and its sidecar files
    for extra, message in _error_cases(tmp_path):
        r = build_cli(image_folder, store, *extra)
        assert r.exit_code == 2, (extra, r.output)
        assert r.stderr.count("\n") == 1 and message in r.stderr, (extra, r.stderr)
        assert snapshot(store) == before, extra
        fresh = tmp_path / "fresh.h5"
        assert build_cli(image_folder, fresh, *extra).exit_code == 2 and not fresh.exists()


# --- embed anomalies --exclude ------------------------------------------------------------------


@pytest.fixture(scope="module")
def anomaly_store(tmp_path_factory):
    from embedstore.ingest import build

    root = tmp_path_factory.mktemp("anom-exclude")
    make_image_folder(root / "photos", classes=("cat", "dog", "owl"), per_class=12)
    build(root / "photos", root / "s.h5", encoder="test:tiny", workers=0, precision="fp32", progress=False)
    return root / "s.h5"


def test_anomalies_exclude_leaves_fit_set_but_still_ranks_and_marks(anomaly_store, tmp_path):
    dropped_cats = ["cat/cat_000.jpg", "cat/cat_003.png", "cat/cat_005.png"]
    audit = write_audit(tmp_path / "audit.csv", [(i, "duplicate") for i in dropped_cats] + [("owl/owl_001.png", "duplicate"),
                                                                                           ("dog/dog_004.jpg", "blurry")])
    out = tmp_path / "ranked.csv"
    r = embed("anomalies", "--store", anomaly_store, "--method", "knn", "--fit-on", "label=cat", "--exclude", audit,
              "--exclude-kinds", "duplicate", "--json", "-q", "--top", 36, "--out", out)
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["fit_count"] == 9 and rep["excluded_from_fit"] == 3 and rep["scored_count"] == 36
    assert rep["threshold"]["description"].startswith("5% of leave-one-out scores of 9 normal items")
    marked = {x["id"] for x in rep["ranked"] if x["excluded"]}
    assert marked == set(dropped_cats) | {"owl/owl_001.png"}  # kinds filter: the blurry dog is not on it
    for x in rep["ranked"]:
        assert x["in_fit_set"] == (x["label"] == "cat" and x["id"] not in marked)
    assert rep["exclusions"]["excluded_from_fit"] == 3 and rep["exclusions"]["ranked"] == 4
    assert any("3 items kept out of the fit set" in n for n in rep["notes"])
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 36 and {r_["id"] for r_ in rows if r_["excluded"] == "True"} == marked

    # the excluded cats are scored by the full model as unseen items: exactly what score_samples gives
    from embedstore.detectors.anomalies import find_anomalies
    from embedstore.store import open_store

    rep2, det = find_anomalies(anomaly_store, "knn", fit_on="label=cat", exclude=audit, exclude_kinds=["duplicate"],
                               progress=False, save=tmp_path / "det")
    saved = json.loads((tmp_path / "det" / "detector.json").read_text())
    assert saved["exclusions"]["excluded_from_fit"] == 3 and saved["exclusions"]["path"] == str(audit)
    with open_store(anomaly_store) as st:
        (vs,) = st.vector_sets()
        rows_ = st.rows(vs.name)
        sel = np.isin(rows_.ids.astype(str), dropped_cats)
        X = rows_.load(sel)
        ids = rows_.ids[sel].astype(str)
    expected = dict(zip(ids, -det.score_samples(X)))
    got = {x["id"]: x["score"] for x in rep2.ranked if x["id"] in expected}
    assert got == pytest.approx(expected)
    assert det.n_features_in_ == X.shape[1] and len(det.fit_scores_) == 9


def test_anomalies_exclude_summary_marks_rows(anomaly_store, tmp_path):
    drop = tmp_path / "drop.txt"
    drop.write_text("owl/owl_000.jpg\n")
    r = embed("anomalies", "--store", anomaly_store, "--fit-on", "label=cat", "--exclude", drop, "--top", 36, "-q")
    assert r.exit_code == 0, r.output
    assert "(12 items; 0 left out by --exclude)" in r.output
    line = next(ln for ln in r.output.splitlines() if ln.endswith("owl/owl_000.jpg"))
    assert line.split()[3:] in (["x", "owl", "owl/owl_000.jpg"], ["*", "x", "owl", "owl/owl_000.jpg"])  # excluded, not fitted on
    assert sum("x" in ln.split()[3:-2] for ln in r.output.splitlines() if ln.strip()[:1].isdigit()) == 1  # that row only


def test_anomalies_exclude_errors(anomaly_store, tmp_path):
    before = snapshot(anomaly_store)
    cases = _error_cases(tmp_path)
    every_cat = tmp_path / "cats.txt"
    every_cat.write_text("".join(f"cat/cat_{i:03d}{'.jpg' if i % 2 == 0 else '.png'}\n" for i in range(12)))
    cases.append((["--fit-on", "label=cat", "--exclude", every_cat], "leaves none of the 12 items"))
    for extra, message in cases:
        r = embed("anomalies", "--store", anomaly_store, *extra)
        assert r.exit_code == 2, (extra, r.output)
        assert r.stderr.count("\n") == 1 and message in r.stderr, (extra, r.stderr)
    assert snapshot(anomaly_store) == before
