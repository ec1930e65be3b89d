"""`embed finetune`, `embed drift`, `embed compare-encoders` on CPU with tiny data."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from conftest import copy_store, embed, make_image_folder




@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from embedstore.ingest import build

    root = tmp_path_factory.mktemp("ft")
    make_image_folder(root / "photos", classes=("cat", "dog", "owl"), per_class=10)
    build(root / "photos", root / "s.h5", encoder="test:tiny", workers=0, precision="fp32", progress=False)
    return root / "s.h5"


def test_finetune_trains_only_the_last_blocks_and_makes_a_loadable_encoder(store, tmp_path):
    import torch
    from safetensors.torch import load_file

    from embedstore.encoders import create_encoder
    from embedstore.finetune.loop import Recipe
    from embedstore.finetune.run import finetune

    from embedstore.ingest import build

    # Three classes of coloured noise: the probe starts the classifier near 0.5 loss and the last block lowers it
    # (to 0.35 at lr 0.003). Not grey noise for all three: there the probe finds no signal, chooses its strongest
    # regularisation (weights ~1e-4, so no gradient reaches the encoder) and whether the loss moves depended on
    # the CPU's rounding in the probe's tie-break.
    s = tmp_path / "s.h5"
    build(make_image_folder(tmp_path / "colours", classes=("cat", "dog", "owl"), per_class=10), s, encoder="test:tiny",
          workers=0, progress=False)
    before = {k: v.clone() for k, v in create_encoder("test:tiny").model.state_dict().items()}
    r = finetune(s, tmp_path / "ft", recipe=Recipe(unfreeze=1, epochs=4, batch_size=8, patience=10, augment=False, lr=0.003),
                 workers=0, progress=False)
    losses = [h["train_loss"] for h in r.history]
    assert len(losses) == 4 and losses[-1] < 0.85 * losses[0], losses
    after = load_file(str(tmp_path / "ft" / "weights.safetensors"))
    for k in ("0.weight", "0.bias", "2.weight", "2.bias"):  # frozen: bit-for-bit unchanged
        assert torch.equal(after[k], before[k]), k
    assert not torch.equal(after["4.weight"], before["4.weight"])  # the last block trained
    doc = json.loads((tmp_path / "ft" / "encoder.json").read_text())
    assert doc["parent"] == "test:tiny" and doc["recipe"]["unfreeze"] == 1
    enc = create_encoder(f"local-dir:{tmp_path / 'ft'}")
    assert enc.cfg.dim == 32 and enc.cfg.preprocess == create_encoder("test:tiny").cfg.preprocess
    assert enc(torch.zeros(2, 3, 32, 32)).shape == (2, 32)
    # re-embedded beside the old set, never mixed; a probe on it is in the report
    assert r.new_vector_set and r.new_vector_set != r.vector_set
    assert set(r.after) == {"finetuned_classifier", "probe_on_new_vectors"}
    assert 0 <= r.after["probe_on_new_vectors"]["selection"]["accuracy"] <= 1
    assert "Fine-tune:" in (tmp_path / "ft" / "report" / "index.html").read_text()
    info = embed("info", s, "--json")
    sets = {v["provenance"]["encoder"] for v in json.loads(info.output)["vector_sets"]}
    assert sets == {"test:tiny", f"local-dir:{tmp_path / 'ft'}"}  # versions side by side, never mixed
    d = embed("drift", s, "--from", "test:tiny", "--to", f"local-dir:{tmp_path / 'ft'}", "--json")
    assert d.exit_code == 0, d.output
    dj = json.loads(d.output)
    assert dj["items"] == 30 and 0 < dj["mean_cosine"] < 1.0 and 0 <= dj["knn_overlap"] <= 1
    assert dj["knn_overlap_chance"] == pytest.approx(10 / 29)
    # a sample too small for k: every item's neighbours would be all the others (overlap 1 by construction)
    for k, sample in ((10, 10), (9, 10), (29, 5000)):
        d = embed("drift", s, "--from", "test:tiny", "--to", f"local-dir:{tmp_path / 'ft'}", "-k", k, "--sample", sample)
        assert d.exit_code == 2 and f"needs at least k + 2 = {k + 2}" in d.output, d.output
    d = embed("drift", s, "--from", "test:tiny", "--to", f"local-dir:{tmp_path / 'ft'}", "-k", 6, "--sample", 10)
    assert d.exit_code == 0 and "seeded sample of 30" in d.output and "the overlap says little" in d.output, d.output
    r2 = embed("fit-head", "logistic", "--store", s, "--set", f"local-dir:{tmp_path / 'ft'}", "-q", "--json")
    assert r2.exit_code == 0, r2.output


def test_a_finetune_into_a_relative_folder_is_usable_from_any_working_directory(store, tmp_path, monkeypatch):
    """The re-embedded set records the encoder's folder as an absolute path: heads and image search
    on it work from anywhere, and --set accepts the folder as typed where it was made."""
    from embedstore.finetune.loop import Recipe
    from embedstore.finetune.run import finetune

    s = copy_store(store, tmp_path / "s.h5")
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    r = finetune(s, "runs/ft", recipe=Recipe(unfreeze=1, epochs=1, batch_size=8, augment=False), workers=0, progress=False)
    absolute = f"local-dir:{tmp_path / 'work' / 'runs' / 'ft'}"
    assert r.encoder == absolute
    assert embed("fit-head", "logistic", "--store", s, "--set", "local-dir:runs/ft", "--out", tmp_path / "h", "-q").exit_code == 0
    monkeypatch.chdir(tmp_path)
    img = next((store.parent / "photos").rglob("*.png"))
    for args in (["predict", tmp_path / "h", img.parent, "--json", "-q"],
                 ["search", s, "--set", absolute, "--image", img, "-k", 1, "--json"]):
        out = embed(*args)
        assert out.exit_code == 0, (args, out.output)


def test_resume_continues_from_the_checkpoint(store, tmp_path):
    from embedstore.finetune.loop import Recipe
    from embedstore.finetune.run import finetune

    s = copy_store(store, tmp_path / "s.h5")
    rec = Recipe(unfreeze=1, epochs=3, batch_size=8, patience=10, augment=False)
    full = finetune(s, tmp_path / "full", recipe=rec, workers=0, progress=False, reembed=False)
    # the same run stopped after one epoch, then resumed
    short = Recipe(**{**rec.to_dict(), "epochs": 1})
    finetune(s, tmp_path / "part", recipe=short, workers=0, progress=False, reembed=False)
    state = json.loads((tmp_path / "part" / "checkpoint" / "state.json").read_text())
    state["recipe"]["epochs"] = 3  # as if the first run had been asked for 3 epochs and was killed after one
    (tmp_path / "part" / "checkpoint" / "state.json").write_text(json.dumps(state))
    resumed = finetune(s, tmp_path / "part", recipe=rec, workers=0, progress=False, reembed=False, resume=True)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    np.testing.assert_allclose([h["train_loss"] for h in resumed.history], [h["train_loss"] for h in full.history], rtol=1e-4)


def test_finetune_errors(store, tmp_path):
    s = copy_store(store, tmp_path / "s.h5")
    (tmp_path / "exists").mkdir()
    (tmp_path / "exists" / "x").write_text("mine")
    make_image_folder(tmp_path / "flatsrc", classes=("x",), per_class=3)
    from embedstore.ingest import build

    build(tmp_path / "flatsrc" / "x", tmp_path / "nolabels.h5", encoder="test:tiny", labels=False, workers=0, progress=False)
    assert embed("fit-head", "ridge", "--store", s, "--out", tmp_path / "knnhead").exit_code == 0
    assert embed("fit-head", "knn", "--store", s, "--out", tmp_path / "knn", "-q").exit_code == 0
    other = tmp_path / "other.h5"
    build(make_image_folder(tmp_path / "o", per_class=3), other, encoder="test:tiny", normalize="none", workers=0, progress=False)
    assert embed("fit-head", "ridge", "--store", other, "--out", tmp_path / "otherhead", "-q").exit_code == 0
    cases = [
        (["--store", s, "--out", tmp_path / "a", "--unfreeze", 9], "this encoder has 3 blocks"),
        (["--store", tmp_path / "nolabels.h5", "--out", tmp_path / "b"], "no labelled items"),
        (["--store", s, "--out", tmp_path / "exists"], "already exists"),
        (["--store", s, "--out", tmp_path / "exists", "--overwrite"], "not a finetune folder"),
        (["--store", s, "--out", tmp_path / "c", "--resume"], "holds no checkpoint"),
        (["--store", s, "--out", tmp_path / "d", "--head", tmp_path / "knn"], "must be a linear head"),
        (["--store", s, "--out", tmp_path / "e", "--head", tmp_path / "otherhead"], "trained on other vectors"),
    ]
    for extra, message in cases:
        r = embed("finetune", *extra, "-q", "-w", 0)
        assert r.exit_code == 2, (extra, r.output)
        assert message in r.output, (extra, r.output)
    assert (tmp_path / "exists" / "x").read_text() == "mine"
    assert not (tmp_path / "a").exists()  # a bad option fails before anything is written


def test_out_of_memory_is_caught_with_a_smaller_batch_suggested(store, tmp_path, monkeypatch):
    import torch

    from embedstore.errors import FinetuneError
    from embedstore.finetune.loop import Recipe
    from embedstore.finetune.run import finetune

    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(torch.optim.AdamW, "step", oom)  # the fine-tune step only (the probe uses L-BFGS)
    with pytest.raises(FinetuneError, match="--batch-size 4"):
        finetune(copy_store(store, tmp_path / "s.h5"), tmp_path / "ft", recipe=Recipe(epochs=1, batch_size=8), workers=0,
                 progress=False)
    assert not (tmp_path / "ft").exists()  # so the retry with a smaller batch needs no --overwrite


def test_compare_encoders_table_and_recommendation(store, tmp_path):
    r = embed("compare-encoders", store.parent / "photos", "--encoders", "test:tiny,torchvision:resnet18", "--sample", 24,
              "--report", tmp_path / "cmp", "--json", "-q")
    assert r.exit_code == 0, r.output
    c = json.loads(r.output)
    ok, skipped = c["results"]
    assert ok["encoder"] == "test:tiny" and ok["dim"] == 32 and 0 <= ok["linear_probe_ci"][0] <= ok["linear_probe"]
    assert ok["encode_items_per_s"] > 0 and ok["store_mb"] > 0 and c["sample"] == 24
    assert "error" in skipped and "--weights" in skipped["error"]  # offline: skipped with the reason, not fatal
    assert c["recommended"] == "test:tiny" and c["why"] and c["finetune"]
    assert c["why"].endswith("only test encoders ran (test:..., seeded random weights for the test suite): compare real encoders")
    assert "Recommended: test:tiny" in (tmp_path / "cmp" / "index.html").read_text()
    r = embed("compare-encoders", store.parent / "photos", "--encoders", "")
    assert r.exit_code == 2 and "names no encoder" in r.output


def test_drift_errors(store):
    r = embed("drift", store, "--from", "test:tiny", "--to", "test:tiny")
    assert r.exit_code == 2 and "same vector set" in r.output
    r = embed("drift", store, "--from", "test:tiny", "--to", "local-dir:nowhere")
    assert r.exit_code == 2 and "no vector set" in r.output


def test_compare_encoders_needs_labelled_classes(tmp_path):
    make_image_folder(tmp_path / "one", classes=("cat",), per_class=3)
    r = embed("compare-encoders", tmp_path / "one", "--encoders", "test:tiny")
    assert r.exit_code == 2 and "fewer than two labelled classes" in r.output
    r = embed("compare-encoders", tmp_path / "missing", "--encoders", "test:tiny")
    assert r.exit_code == 2 and "does not exist" in r.output


def test_compare_encoders_on_texts_and_when_nothing_runs(tmp_path):
    """A text CSV is sampled as texts (it was written as a manifest of file paths that do not exist,
    so every encoder was skipped), and a comparison where no encoder could run exits non-zero."""
    import csv

    with open(tmp_path / "reviews.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i in range(30):
            w.writerow([f"great value, works well, item {i}", "good"])
            w.writerow([f"broke after a week, waste of money, item {i}", "bad"])
    r = embed("compare-encoders", tmp_path / "reviews.csv", "--encoders", "test:hash-text", "--sample", 40, "--json", "-q")
    assert r.exit_code == 0, r.output
    c = json.loads(r.stdout)
    (row,) = c["results"]
    assert "error" not in row and row["items"] == 40 and c["recommended"] == "test:hash-text"
    assert row["dim"] == 64 and row["n_test"] >= 6 and len(row["linear_probe_ci"]) == 2
    r = embed("compare-encoders", tmp_path / "reviews.csv", "--encoders", "nosuch:x", "--sample", 40)
    assert r.exit_code == 2 and r.stderr.startswith("error: no encoder could be run") and "unknown encoder source" in r.stderr



def test_finetune_leaves_items_whose_files_are_gone_out_and_their_old_vectors_alone(tmp_path):
    """Deleted files: left out of training, both probes and the re-embed (a manifest row for them
    quarantined them in every set, so the original set lost their vectors and labels); before and
    after are scored on the same test items. All files gone (the folder moved): one line, before training."""
    import shutil

    from embedstore.finetune.loop import Recipe
    from embedstore.finetune.run import finetune
    from embedstore.ingest import build
    from embedstore.store import open_store

    photos = make_image_folder(tmp_path / "photos", classes=("cat", "dog", "owl"), per_class=10)
    s = tmp_path / "s.h5"
    build(photos, s, encoder="test:tiny", workers=0, precision="fp32", progress=False)
    gone = sorted((photos / "cat").iterdir())[:2]
    for f in gone:
        f.unlink()
    with open_store(s) as st:
        old_set = st.select_set(None).name
        before_counts = st.vector_sets()[0].count
    r = finetune(s, tmp_path / "ft", recipe=Recipe(unfreeze=1, epochs=1, batch_size=8, augment=False), workers=0, progress=False)
    with open_store(s) as st:
        items = st.items()
        assert (items["status"] == "ok").all(), "no item was quarantined by the re-embed"
        counts = {v.name: v.count for v in st.vector_sets()}
    assert counts[old_set] == before_counts == 30 and counts[r.new_vector_set] == 28
    assert any("2 item(s)" in n and "left out" in n for n in r.notes), r.notes
    probe = r.after["probe_on_new_vectors"]
    assert r.before["test_n"] == r.after["finetuned_classifier"]["test_n"] == probe["test_n"]
    assert sum(r.counts.values()) == 28
    shutil.move(photos, tmp_path / "moved")
    out = embed("finetune", "--store", s, "--out", tmp_path / "ft2", "-q", "-w", 0)
    assert out.exit_code == 2 and "none of the 30 image files" in out.output and "embed build NEW_FOLDER" in out.output, out.output
    assert not (tmp_path / "ft2").exists()


def test_a_recommendation_on_too_few_test_items_says_so_instead_of_calling_them_tied():
    """On 2 paired test items no outcome could be significant, so 'no significant difference' and
    the faster encoder was a recommendation from nothing (a seeded-hash encoder won that way)."""
    from embedstore.heads.compare import MIN_PAIRED, recommend

    def rows():
        return [{"encoder": "big", "linear_probe": 1.0, "encode_items_per_s": 10.0, "dim": 384, "store_mb": 1.0, "train_per_class": 4},
                {"encoder": "fast", "linear_probe": 0.5, "encode_items_per_s": 9000.0, "dim": 64, "store_mb": 0.1, "train_per_class": 4}]

    def answers(n):
        truth = {f"i{k}": "a" for k in range(n)}
        return {"big": (dict(truth), truth), "fast": ({i: ("b" if k % 2 else "a") for k, i in enumerate(truth)}, truth)}

    r = recommend(rows(), answers(2))
    assert r["recommended"] == "big" and "only 2 test items, too few for a paired test" in r["why"]
    assert MIN_PAIRED == 6
    r = recommend(rows(), answers(8))  # 4 discordant of 8: p = 0.125, a real 'no significant difference'
    assert r["recommended"] == "fast" and "no significant difference on 8 items" in r["why"]


def test_compare_encoders_refuses_a_class_too_small_to_split_before_embedding(tmp_path):
    """A class of one item: refused once, before any encoder runs (it embedded with every encoder,
    marked each 'skipped' with the same data error, then exited 2)."""
    rows = [f"good thing {i},good" for i in range(12)] + [f"bad thing {i},bad" for i in range(12)] + ["odd one,rare"]
    (tmp_path / "t.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    r = embed("compare-encoders", tmp_path / "t.csv", "--encoders", "test:hash-text,nosuch:x", "--work", tmp_path / "w")
    assert r.exit_code == 2 and "class 'rare' (1) has too few labelled items" in r.stderr, r.output
    assert "remove its rows from the source" in r.stderr and not list((tmp_path / "w").glob("*.h5"))


def test_the_classifier_starts_unseen_by_validation_and_test_keeps_no_copy_of_training_items(store, tmp_path, monkeypatch):
    """The classifier started from the probe refit on train + val, so every epoch scored val on
    items it had been fitted on (a text store showed val accuracy 1.0 at every epoch with lr 1e-9,
    against 0.44 for a probe fitted on train): early stopping and the best epoch were chosen on
    nothing. It now starts from the probe's C fitted on train alone. A test item that is a byte copy
    of a training item leaves the test split, as in fit-head."""
    import shutil

    from embedstore.finetune import run as ft
    from embedstore.finetune.loop import Recipe
    from embedstore.heads.data import TEST, TRAIN, SplitData
    from embedstore.ingest import build
    from embedstore.store import open_store

    photos = tmp_path / "photos"
    shutil.copytree(store.parent / "photos", photos)
    s = tmp_path / "s.h5"
    build(photos, s, encoder="test:tiny", workers=0, precision="fp32", progress=False)
    started = []
    real = ft._init_from_head
    monkeypatch.setattr(ft, "_init_from_head", lambda net, head, data: started.append(head) or real(net, head, data))
    rec = Recipe(unfreeze=0, epochs=1, batch_size=8, lr=1e-9, augment=False)
    r = ft.finetune(s, tmp_path / "run", recipe=rec, workers=0, progress=False, reembed=False)
    with open_store(s) as st:
        rows = st.rows(st.select_set().name)
    data = SplitData(rows, 0.15, 0.15, 0, None, max_memory=1 << 40)
    seen_val, _, train_only = ft._probe(data, train_only=True)
    (head,) = started
    np.testing.assert_allclose(head.coef_, train_only.coef_, rtol=1e-6, atol=1e-8)  # the fit on train alone
    assert not np.allclose(head.coef_, seen_val.coef_, rtol=1e-3)  # not the refit on train + val it used to be
    assert "fitted on train only" in r.notes[0]
    # plant a copy of a training item among the test items: it leaves the test split
    tr = rows.uris[data.mask(TRAIN)][0]
    te = rows.uris[data.mask(TEST)][0]
    shutil.copy(tr, te)
    build(photos, s, encoder="test:tiny", workers=0, precision="fp32", progress=False)
    r = ft.finetune(s, tmp_path / "run2", recipe=rec, workers=0, progress=False, reembed=False)
    assert any(n.startswith("1 test item(s) have the content of a train or val item") for n in r.notes), r.notes
    assert r.counts["test"] == int(data.mask(TEST).sum()) - 1 == r.before["test_n"]


def test_resume_takes_the_runs_recipe_and_names_an_option_that_differs(store, tmp_path):
    """`embed finetune --store S --out RUN --resume`, as --help shows it, failed after loading the
    model whenever the run had non-default options, printing the whole recipe without saying which
    option differed."""
    s = copy_store(store, tmp_path / "s.h5")
    run = tmp_path / "run"
    r = embed("finetune", "--store", s, "--out", run, "--unfreeze", 1, "--epochs", 1, "-b", 8, "--no-augment", "-q", "-w", 0,
              "--no-reembed")
    assert r.exit_code == 0, r.output
    r = embed("finetune", "--store", s, "--out", run, "--resume", "-q", "-w", 0, "--no-reembed", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["recipe"]["unfreeze"] == 1 and json.loads(r.stdout)["recipe"]["augment"] is False
    r = embed("finetune", "--store", s, "--out", run, "--resume", "--epochs", 3, "--seed", 2, "-q", "-w", 0)
    assert r.exit_code == 2 and r.output.count("\n") == 1, r.output
    assert "--epochs: 1 in the run, 3 now; --seed: 0 in the run, 2 now" in r.output and "leave those options out" in r.output


def test_a_head_fitted_before_a_finetune_still_starts_the_next_one_on_its_own_set(store, tmp_path):
    """After one fine-tune added its vector set (the default from then on), `finetune --head OLD`
    failed: 'trained on other vectors than local-dir...', without naming --set, while evaluate and
    serve pick the head's set themselves. finetune does the same now."""
    s = copy_store(store, tmp_path / "s.h5")
    assert embed("fit-head", "logistic", "--store", s, "--out", tmp_path / "h0", "-q").exit_code == 0
    args = ["--unfreeze", 1, "--epochs", 1, "-b", 8, "--no-augment", "-q", "-w", 0, "--json"]
    r = embed("finetune", "--store", s, "--out", tmp_path / "ft1", *args)
    assert r.exit_code == 0, r.output
    first = json.loads(r.stdout)["vector_set"]
    r = embed("finetune", "--store", s, "--out", tmp_path / "ft2", "--head", tmp_path / "h0", "--no-reembed", *args)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["vector_set"] == first and "classifier started from --head" in json.loads(r.stdout)["notes"][0]


def test_a_test_encoder_is_never_recommended_over_a_real_one():
    """compare-encoders recommended test:tiny (seeded random weights) over effnet-lite:lite0 on its
    higher probe accuracy on 100 items, while saying there was no significant difference."""
    from embedstore.heads.compare import recommend

    rows = [{"encoder": "test:tiny", "linear_probe": 0.9, "encode_items_per_s": 900.0, "train_per_class": 30, "dim": 32,
             "store_mb": 0.1},
            {"encoder": "effnet-lite:lite0", "linear_probe": 0.8, "encode_items_per_s": 50.0, "train_per_class": 30,
             "dim": 1280, "store_mb": 1.0}]
    c = recommend(rows)
    assert c["recommended"] == "effnet-lite:lite0" and "test encoders (test:...," in c["why"] and "never recommended" in c["why"]


FT_ARGS = ["--unfreeze", 1, "--epochs", 1, "-b", 8, "--no-augment", "-q", "-w", 0]


def _sets(s):
    from embedstore.store import open_store

    with open_store(s) as st:
        return {v.name: v.encoder for v in st.vector_sets()}


def test_a_second_finetune_starts_from_the_registry_set_and_refuses_a_finetuned_one_before_loading(store, tmp_path, monkeypatch):
    """After a first fine-tune its local-dir set became the store's default, so a second fine-tune
    trained on it, then failed at the re-embed ('a local-dir encoder's parent must be a registry
    encoder') after a whole epoch, leaving weights.safetensors that made the same command need
    --overwrite. Now it fine-tunes the registry encoder's set and says so; --set or --head naming
    a fine-tuned set is refused in one line before any model loads."""
    from embedstore.embedding import EmbeddingService
    from embedstore.encoders import create_encoder

    s = copy_store(store, tmp_path / "s.h5")
    (first,) = _sets(s)
    r = embed("finetune", "--store", s, "--out", tmp_path / "ft1", *FT_ARGS, "--json")
    assert r.exit_code == 0, r.output
    ft1 = json.loads(r.stdout)["new_vector_set"]
    assert _sets(s)[ft1] == f"local-dir:{tmp_path / 'ft1'}"
    r = embed("finetune", "--store", s, "--out", tmp_path / "ft2", *FT_ARGS, "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["vector_set"] == first and rep["parent"] == "test:tiny"
    assert any(n.startswith(f"fine-tuned vector set {first} (test:tiny)") and f"made by the fine-tuned encoder local-dir:{tmp_path / 'ft1'}" in n
               for n in rep["notes"]), rep["notes"]
    assert json.loads((tmp_path / "ft2" / "encoder.json").read_text())["parent"] == "test:tiny"
    assert create_encoder(f"local-dir:{tmp_path / 'ft2'}").cfg.dim == 32  # a loadable encoder, its set beside the others
    assert _sets(s)[rep["new_vector_set"]] == f"local-dir:{tmp_path / 'ft2'}" and len(_sets(s)) == 3
    # naming a fine-tuned set: refused before the encoder loads, naming the parent's set to use
    assert embed("fit-head", "logistic", "--store", s, "--set", ft1, "--out", tmp_path / "h1", "-q").exit_code == 0

    def no_load(*a, **k):
        raise AssertionError("the encoder was loaded")

    monkeypatch.setattr(EmbeddingService, "from_provenance", no_load)
    for extra in (["--set", f"local-dir:{tmp_path / 'ft1'}"], ["--set", ft1]):
        r = embed("finetune", "--store", s, "--out", tmp_path / "x8", *extra, *FT_ARGS)
        assert r.exit_code == 2 and r.output.count("\n") == 1, (extra, r.output)
        assert f"vector set {ft1} is made by the fine-tuned encoder local-dir:{tmp_path / 'ft1'}" in r.output, r.output
        assert r.output.rstrip().endswith("fine-tune its parent test:tiny's set instead: --set test:tiny"), r.output
    r = embed("finetune", "--store", s, "--out", tmp_path / "x8", "--head", tmp_path / "h1", *FT_ARGS)
    assert r.exit_code == 2 and r.output.count("\n") == 1, r.output
    assert f"head {tmp_path / 'h1'} was fitted on vector set {ft1}" in r.output and "leave out --head" in r.output
    assert f"`embed fit-head logistic --store {s} --set test:tiny`" in r.output, r.output
    assert not (tmp_path / "x8").exists() and len(_sets(s)) == 3


def test_a_run_that_fails_after_training_leaves_nothing_that_blocks_the_same_command(store, tmp_path, monkeypatch):
    """A failure once training has started removed nothing: the half-written --out folder (90 MB of
    weights for MiniLM) made the same command fail with 'already exists'. Now a fresh run removes
    what it wrote; Ctrl-C keeps a saved checkpoint for --resume; and once the store holds vectors
    of the new encoder the folder is kept (its set would name a missing encoder) and --resume
    finishes the run without training again, into the same vector set."""
    import torch

    from embedstore.errors import FinetuneError
    from embedstore.finetune import run as ft
    from embedstore.finetune.loop import Recipe

    s = copy_store(store, tmp_path / "s.h5")
    args = ["finetune", "--store", s, "--out", tmp_path / "ft", *FT_ARGS]
    real_reembed = ft._reembed_and_probe

    def reembed_fails(*a, **k):
        raise FinetuneError("the re-embed failed (injected)")

    monkeypatch.setattr(ft, "_reembed_and_probe", reembed_fails)
    r = embed(*args)
    assert r.exit_code == 2 and "the re-embed failed (injected)" in r.output, r.output
    # an epoch had finished: its checkpoint alone is kept (see test_a_failure_after_an_epoch_keeps_its_checkpoint...)
    assert "re-run with --resume to continue, or --overwrite to start over" in r.output, r.output
    assert sorted(p.name for p in (tmp_path / "ft").iterdir()) == ["checkpoint"] and len(_sets(s)) == 1
    shutil.rmtree(tmp_path / "ft")
    monkeypatch.setattr(ft, "_reembed_and_probe", real_reembed)
    # out of memory at the first step: the retry with a smaller batch needs no --overwrite either
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda *a, **k: (_ for _ in ()).throw(torch.OutOfMemoryError("CUDA oom")))
    r = embed(*args)
    assert r.exit_code == 2 and "try --batch-size 4" in r.output and not (tmp_path / "ft").exists(), r.output
    monkeypatch.undo()
    # Ctrl-C before any epoch finished keeps nothing; after one, the checkpoint, which --resume continues
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    rec = Recipe(unfreeze=1, epochs=1, batch_size=8, augment=False)
    with pytest.raises(KeyboardInterrupt):
        ft.finetune(s, tmp_path / "ft", recipe=rec, workers=0, progress=False)
    assert not (tmp_path / "ft").exists()
    monkeypatch.undo()
    monkeypatch.setattr(ft, "_export", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        ft.finetune(s, tmp_path / "ft", recipe=rec, workers=0, progress=False)
    assert (tmp_path / "ft" / "checkpoint" / "state.json").is_file() and not (tmp_path / "ft" / "encoder.json").exists()
    monkeypatch.undo()
    done = ft.finetune(s, tmp_path / "ft", recipe=rec, workers=0, progress=False, resume=True, reembed=False)
    assert [h["epoch"] for h in done.history] == [1] and (tmp_path / "ft" / "encoder.json").is_file()
    # the store already holds the new encoder's vectors when the run fails: kept, and --resume finishes it
    from embedstore.finetune import report as ft_report

    monkeypatch.setattr(ft_report, "finetune_section", lambda *a, **k: (_ for _ in ()).throw(FinetuneError("report failed (injected)")))
    r = embed(*args[:4], tmp_path / "ft3", *FT_ARGS)
    assert r.exit_code == 2 and r.output.count("\n") == 1, r.output
    assert "report failed (injected)" in r.output and f"{tmp_path / 'ft3'} keeps the fine-tuned encoder" in r.output
    assert "re-run with --resume" in r.output and (tmp_path / "ft3" / "encoder.json").is_file()
    made = {n for n, e in _sets(s).items() if e == f"local-dir:{tmp_path / 'ft3'}"}
    assert len(made) == 1
    monkeypatch.undo()
    r = embed(*args[:4], tmp_path / "ft3", *FT_ARGS, "--resume", "--json")
    assert r.exit_code == 0, r.output
    assert {json.loads(r.stdout)["new_vector_set"]} == made == {n for n, e in _sets(s).items() if e.endswith("ft3")}
    assert (tmp_path / "ft3" / "report.json").is_file()


def test_every_number_says_what_it_is_measured_on(store, tmp_path):
    """The probes' 'val' was 5-fold cross-validation on train + val while the fine-tuned classifier's
    was the val split, both under one 'val accuracy' header, and the two 'no significant difference'
    lines did not say which pair each compared."""
    s = copy_store(store, tmp_path / "s.h5")
    r = embed("finetune", "--store", s, "--out", tmp_path / "ft", *FT_ARGS)
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "ft" / "report.json").read_text())
    n_sel, n_val, n_test = rep["counts"]["train"] + rep["counts"]["val"], rep["counts"]["val"], rep["counts"]["test"]
    assert n_val < 30  # so the probes choose their C by cross-validation, as fit-head does: the mixed case
    figures = [rep["before"], rep["after"]["finetuned_classifier"], rep["after"]["probe_on_new_vectors"]]
    for d in figures:
        assert "val_accuracy" not in d and d["test_on"] == "the test split" and d["test_n"] == n_test
        lo, hi = d["test_accuracy_ci"]
        assert lo <= d["test_accuracy"] <= hi and len(d["test_balanced_accuracy_ci"]) == 2
        sel = d["selection"]
        assert sel["accuracy_ci"][0] <= sel["accuracy"] <= sel["accuracy_ci"][1]
    probe, fine, new = (d["selection"] for d in figures)
    assert probe["on"] == new["on"] == "5-fold cross-validation over train + val" and probe["n"] == new["n"] == n_sel
    assert probe["chose"] == "C" and fine == {**fine, "on": "the val split", "n": n_val, "chose": "epoch"}
    out = r.output
    assert f"test split, {n_test} items untouched" in out
    assert out.count(f"C chosen on 5-fold cross-validation over train + val, {n_sel} items: accuracy ") == 2, out
    assert f"epoch chosen on the val split, {n_val} items: accuracy {fine['accuracy']:.4f} (95% CI " in out, out
    assert "; val " not in out and "(chose the C / epoch" not in out
    verdicts = [line.strip() for line in out.splitlines() if "McNemar" in line]
    assert [v.split(", on the test split: ")[0] for v in verdicts] == [
        "the fine-tuned classifier vs the linear probe on frozen features",
        "the linear probe on the re-embedded vectors vs the linear probe on frozen features"], verdicts
    assert [c["verdict"] for c in rep["comparisons"]] == verdicts
    page = (tmp_path / "ft" / "report" / "index.html").read_text()
    assert "val accuracy" not in page and "<th class=\"l\">measured on</th>" in page
    assert page.count("<td class=\"l\">5-fold cross-validation over train + val</td>") == 2
    assert page.count("<td class=\"l\">the val split</td>") == 1 and all(v in page for v in verdicts)


@pytest.mark.parametrize("extra, message", [
    (["--lr", -1], "--lr must be a number with 0 < --lr <= 1, not -1.0"),
    (["--lr", 0], "0 < --lr <= 1, not 0.0"),
    (["--lr", "nan"], "0 < --lr <= 1, not nan"),
    (["--lr", 5], "0 < --lr <= 1, not 5.0"),
    (["--backbone-lr-mult", 0], "--backbone-lr-mult must be a number with --backbone-lr-mult > 0, not 0.0"),
    (["--weight-decay", -0.1], "--weight-decay must be a number with 0 <= --weight-decay <= 1, not -0.1"),
    (["--seed", -1], "--seed must be an integer with 0 <= --seed <= 4294967295, not -1"),
    (["--epochs", 0], "'--epochs': Input should be greater than or equal to 1"),
    (["--batch-size", 0], "'--batch-size' / '-b': Input should be greater than or equal to 1"),
    (["--patience", 0], "'--patience': Input should be greater than or equal to 1"),
    (["--unfreeze", -1], "'--unfreeze': Input should be greater than or equal to 0"),
    (["--workers", -1], "'--workers' / '-w': Input should be greater than or equal to 0"),
])
def test_every_numeric_option_is_checked_before_anything_is_loaded_or_written(store, tmp_path, monkeypatch, extra, message):
    """`--lr -1` trained (val loss 10.8), re-embedded the store and added a vector set."""
    import embedstore.store

    def no_store(*a, **k):
        raise AssertionError("the store was opened")

    monkeypatch.setattr(embedstore.store, "open_store", no_store)
    r = embed("finetune", "--store", store, "--out", tmp_path / "ft", *extra, "-q")
    assert r.exit_code == 2 and r.output.count("\n") == 1 and message in r.output, r.output
    assert not (tmp_path / "ft").exists()


def test_the_library_checks_the_recipe_too(store, tmp_path):
    from embedstore.errors import FinetuneError
    from embedstore.finetune.loop import Recipe
    from embedstore.finetune.run import finetune

    for bad, message in ((dict(warmup_epochs=-1.0), "warmup_epochs must be a number with warmup_epochs >= 0"),
                         (dict(unfreeze=1.5), "--unfreeze must be an integer with --unfreeze >= 0, not 1.5"),
                         (dict(epochs=True), "--epochs must be an integer"),
                         (dict(class_weight="auto"), "--class-weight must be none or balanced")):
        with pytest.raises(FinetuneError, match=message):
            finetune(store, tmp_path / "ft", recipe=Recipe(**bad), progress=False)
    with pytest.raises(FinetuneError, match=r"--workers must be an integer with --workers >= 0, not -2"):
        finetune(store, tmp_path / "ft", workers=-2, progress=False)
    assert not (tmp_path / "ft").exists()


def test_overwrite_never_replaces_the_encoder_of_a_vector_set_of_the_store(store, tmp_path, monkeypatch):
    """`--overwrite` deleted ft1 before training while the store still listed the set its encoder
    made: searching that set by image then failed ('no encoder.json'), and even a successful
    overwrite left the set with the same encoder id and other weights. Now it is refused in one line
    before anything loads or is deleted, naming the set; and a finished run is not advised --resume."""
    from embedstore.embedding import EmbeddingService

    s = copy_store(store, tmp_path / "s.h5")
    r = embed("finetune", "--store", s, "--out", tmp_path / "ft1", *FT_ARGS, "--json")
    assert r.exit_code == 0, r.output
    made = json.loads(r.stdout)["new_vector_set"]
    weights = (tmp_path / "ft1" / "weights.safetensors").read_bytes()

    def no_load(*a, **k):
        raise AssertionError("the encoder was loaded")

    monkeypatch.setattr(EmbeddingService, "from_provenance", no_load)
    for extra, said in (([], "replacing it would leave"), (["--overwrite"], "--overwrite would leave")):
        r = embed("finetune", "--store", s, "--out", tmp_path / "ft1", *FT_ARGS, *extra)
        assert r.exit_code == 2 and r.output.count("\n") == 1, (extra, r.output)
        assert f"local-dir:{tmp_path / 'ft1'} that made vector set {made} of {s}" in r.output, r.output
        assert f"{said} that set without its encoder: choose a new --out" in r.output and "--resume" not in r.output, r.output
    assert (tmp_path / "ft1" / "weights.safetensors").read_bytes() == weights and (tmp_path / "ft1" / "encoder.json").is_file()
    monkeypatch.undo()
    img = next((store.parent / "photos").rglob("*.png"))
    assert embed("search", s, "--set", made, "--image", img, "-k", 1, "--json").exit_code == 0


def test_a_failure_after_an_epoch_keeps_its_checkpoint_and_a_finished_run_is_not_told_to_resume(store, tmp_path, monkeypatch):
    """A crash after training (here writing the report; or a full disk in the export) removed the
    checkpoints of the finished epochs with the rest of --out. Now `checkpoint/` stays and the one
    line says --resume to continue or --overwrite to start over; once the run has finished, the
    'already exists' advice no longer says --resume."""
    from embedstore.finetune import report as ft_report

    s = copy_store(store, tmp_path / "s.h5")
    args = ["finetune", "--store", s, "--out", tmp_path / "ft", *FT_ARGS, "--no-reembed"]
    monkeypatch.setattr(ft_report, "finetune_section", lambda *a, **k: (_ for _ in ()).throw(KeyError("injected")))
    r = embed(*args)
    assert r.exit_code == 2 and r.output.count("\n") == 1, r.output
    assert "unexpected KeyError: 'injected'" in r.output, r.output
    assert r.output.rstrip().endswith(f"{tmp_path / 'ft'} keeps the checkpoint of the last finished epoch: re-run with "
                                      "--resume to continue, or --overwrite to start over"), r.output
    assert sorted(p.name for p in (tmp_path / "ft").iterdir()) == ["checkpoint"]
    assert (tmp_path / "ft" / "checkpoint" / "state.json").is_file() and len(_sets(s)) == 1
    r = embed(*args)  # unfinished: --resume is the advice
    assert r.exit_code == 2 and "pass --resume to continue its run" in r.output, r.output
    monkeypatch.undo()
    r = embed(*args, "--resume", "--json")
    assert r.exit_code == 0 and [h["epoch"] for h in json.loads(r.stdout)["history"]] == [1], r.output
    assert (tmp_path / "ft" / "report.json").is_file() and (tmp_path / "ft" / "encoder.json").is_file()
    r = embed(*args)  # finished: no --resume
    assert r.exit_code == 2 and "choose a new --out (its run finished)" in r.output and "--resume" not in r.output, r.output


def test_a_test_image_that_no_longer_decodes_leaves_the_finetuned_classifier_without_a_score(store, tmp_path, monkeypatch):
    """Then the fine-tuned classifier's figures have no test_accuracy: the CLI said 'no score' but
    the HTML report indexed it (KeyError after all the training, and the run removed)."""
    from embedstore.finetune import run as ft
    from embedstore.finetune.report import FinetuneReport, finetune_section, selection, test_figures, test_text

    s = copy_store(store, tmp_path / "s.h5")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    real = ft._train_and_save

    def one_test_file_broken(report, net, trainable, dev, amp, train_ds, val_ds, test_ds, *rest):
        test_ds.uris[0] = str(tmp_path / "broken.png")
        return real(report, net, trainable, dev, amp, train_ds, val_ds, test_ds, *rest)

    monkeypatch.setattr(ft, "_train_and_save", one_test_file_broken)
    r = embed("finetune", "--store", s, "--out", tmp_path / "ft", *FT_ARGS, "--no-reembed")
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "ft" / "report.json").read_text())
    fine = rep["after"]["finetuned_classifier"]
    assert "test_accuracy" not in fine and fine["test_n"] == rep["before"]["test_n"] - 1
    assert re.search(r"fine-tuned classifier: +no score \(\d+ items\)", r.output), r.output
    assert any("1 of the" in n and "no longer decode" in n for n in rep["notes"]), rep["notes"]
    page = (tmp_path / "ft" / "report" / "index.html").read_text()
    assert page.count("<td class=\"\">no score</td>") == 2, page
    # the report function alone, as a library caller builds it
    before = {**test_figures(np.array(["a", "b"]), np.array(["a", "a"]), ["a", "b"], ["1", "2"]),
              "selection": selection(0.5, 2, "the val split", "C")}
    r2 = FinetuneReport(out="x", encoder="local-dir:/x", parent="test:tiny", store="s.h5", vector_set="v", classes=["a", "b"],
                        counts={"train": 4, "val": 2, "test": 2}, recipe={}, trainable_params=1, frozen_params=1,
                        before=before, after={"finetuned_classifier": {"test_on": "the test split", "test_n": 1,
                                                                       "selection": selection(1.0, 2, "the val split", "epoch")}})
    assert test_text(r2.after["finetuned_classifier"]) == "no score"
    assert "no score" in finetune_section(r2, tmp_path / "page").body
