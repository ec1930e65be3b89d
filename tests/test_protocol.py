"""A public-style dataset (train/val/test folders of classes) end to end: the store reads splits and
labels from the folders, and `fit-head` + `evaluate` report the test accuracy a careful plain
scikit-learn pipeline gets on the same vectors (C chosen on val, refit on train + val, test once)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import embed, make_image_folder

pytestmark = pytest.mark.slow


def test_train_val_test_folders_give_the_numbers_plain_scikit_learn_gives(tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    from embedstore.heads.logistic import LogisticHead
    from embedstore.store import open_store

    root = tmp_path / "data"
    for split, n, seed in (("train", 40, 1), ("val", 30, 2), ("test", 25, 3)):
        make_image_folder(root / split, classes=("cat", "dog"), per_class=n, seed=seed)
    r = embed("build", root, "--store", tmp_path / "s.h5", "--encoder", "test:tiny", "--precision", "fp32", "-q", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["layout"]["layout"] == "splits"
    info = json.loads(embed("info", tmp_path / "s.h5", "--json").output)
    assert info["labels"] == {"cat": 95, "dog": 95} and info["splits"] == {"test": 50, "train": 80, "val": 60}

    r = embed("fit-head", "logistic", "--store", tmp_path / "s.h5", "--out", tmp_path / "head", "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["split_how"].startswith("the store's split column") and rep["selection"].startswith("on the validation split")

    with open_store(tmp_path / "s.h5") as st:
        rows = st.rows(st.select_set().name)
        X = rows.load()
    y, sp = rows.labels, rows.splits
    tr, va, te = sp == "train", sp == "val", sp == "test"
    best = None
    for C in LogisticHead.sweep_grid:
        m = LogisticRegression(C=C, max_iter=5000, tol=1e-6).fit(X[tr], y[tr])
        key = ((m.predict(X[va]) == y[va]).mean(), -log_loss(y[va], m.predict_proba(X[va]), labels=m.classes_))
        if best is None or key > best[0]:
            best = (key, C)
    plain = LogisticRegression(C=best[1], max_iter=5000, tol=1e-6).fit(X[tr | va], y[tr | va])
    plain_acc = (plain.predict(X[te]) == y[te]).mean()
    assert abs(rep["test"]["accuracy"] - plain_acc) <= 1 / te.sum() + 1e-9, (rep["chosen"], best[1])
    lo, hi = rep["test"]["accuracy_ci"]
    assert lo <= rep["test"]["accuracy"] <= hi and rep["test"]["split"] == "test" and rep["test"]["n"] == 50

    ev = json.loads(embed("evaluate", tmp_path / "head", "--store", tmp_path / "s.h5", "--split", "test", "--json").output)
    assert ev["seen_in_training"] == 0 and ev["n"] == 50 and ev["accuracy"] == pytest.approx(rep["test"]["accuracy"])
    ev = json.loads(embed("evaluate", tmp_path / "head", "--store", tmp_path / "s.h5", "--split", "val", "--json").output)
    assert ev["seen_in_training"] == 60 and "overstate" in ev["notes"][0]  # val chose C and was refit on: said
    assert np.isfinite(ev["accuracy_ci"]).all()
