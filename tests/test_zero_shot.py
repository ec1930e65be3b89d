"""Zero-shot heads on a CLIP store: class prompts embedded by the store's own text tower, saved and
used like any other head. A random-init open_clip model saved as --weights stands in for real weights."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import embed, make_image_folder

TEMPLATES = ("a photo of a {}.", "a blurry photo of a {}.")


@pytest.fixture(scope="module")
def clip_store(tmp_path_factory):
    import open_clip
    import torch

    from embedstore.ingest import build

    root = tmp_path_factory.mktemp("zero-shot")
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-S-32", pretrained=None).eval()
    torch.save(model.state_dict(), root / "clip.pt")
    make_image_folder(root / "photos", classes=("cat", "dog"), per_class=8)
    build(root / "photos", root / "c.h5", encoder="open_clip:ViT-S-32", weights=str(root / "clip.pt"),
          workers=0, precision="fp32", progress=False)
    return root, model


def _expected_weights(model, names) -> np.ndarray:
    import open_clip
    import torch

    tok = open_clip.get_tokenizer("ViT-S-32")
    rows = []
    with torch.inference_mode():
        for name in names:
            t = model.encode_text(tok([tpl.format(name) for tpl in TEMPLATES])).float().numpy()
            t = t.astype(np.float16).astype(np.float64)  # the store's dtype round trip, as the service does
            t /= np.linalg.norm(t, axis=1, keepdims=True)
            m = t.mean(0)
            rows.append(m / np.linalg.norm(m))
        scale = float(model.logit_scale.exp())
    return np.stack(rows) * scale


@pytest.mark.slow
def test_zero_shot_head_end_to_end(clip_store, tmp_path):
    from embedstore.modelfile import load_head
    from embedstore.store import open_store

    root, model = clip_store
    args = ["fit-head", "zero-shot", "--store", root / "c.h5", "--classes", "cat,dog=puppy", "--weights", root / "clip.pt",
            "--out", tmp_path / "zs", "--json"]
    for t in TEMPLATES:
        args += ["--template", t]
    r = embed(*args)
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["head"] == "zero-shot" and rep["classes"] == ["cat", "dog"] and rep["seen_items"] == 0
    assert rep["test"]["n"] == rep["counts"]["test"] > 0 and rep["counts"]["train"] > 0  # the probe's split; only test scored
    head, meta = load_head(tmp_path / "zs")
    assert meta["zero_shot"]["names"] == {"cat": "cat", "dog": "puppy"}
    np.testing.assert_allclose(head.coef_, _expected_weights(model, ["cat", "puppy"]), rtol=2e-3, atol=2e-3)
    # predict and evaluate take it like any other head
    with open_store(root / "c.h5") as st:
        rows = st.rows(st.select_set().name)
        X, ids = rows.load(), [str(i) for i in rows.ids]
    expected = dict(zip(ids, head.classes_[(X @ head.coef_.T).argmax(1)]))
    r = embed("predict", tmp_path / "zs", root / "c.h5", "--weights", root / "clip.pt", "--json")
    assert r.exit_code == 0, r.output
    got = {row["id"]: row["label"] for row in json.loads(r.output)["rows"]}
    assert got == {i: expected[i] for i in got} and len(got) == len(ids)
    r = embed("evaluate", tmp_path / "zs", "--store", root / "c.h5", "--json")
    assert r.exit_code == 0, r.output
    m = json.loads(r.output)
    assert m["n"] == len(ids) and "accuracy" in m


def test_zero_shot_estimator_and_saving(tmp_path):
    from embedstore.heads.zero_shot import ZeroShotHead
    from embedstore.modelfile import load_head, save_head

    E = np.eye(3, 8, dtype=np.float32) * 2
    X = np.eye(3, 8, dtype=np.float32)[[2, 0, 1, 2]]
    head = ZeroShotHead(classes=["a", "b", "c"], class_embeddings=E, logit_scale=50.0).fit(X)
    assert list(head.predict(X)) == ["c", "a", "b", "c"]
    assert np.allclose(head.coef_, np.eye(3, 8) * 50) and np.allclose(head.predict_proba(X).sum(1), 1)
    save_head(tmp_path / "h", head, {"provenance": {}})
    back, _ = load_head(tmp_path / "h")
    assert list(back.predict(X)) == ["c", "a", "b", "c"]
    with pytest.raises(ValueError, match="class embeddings have 8"):
        ZeroShotHead(classes=["a", "b", "c"], class_embeddings=E).fit(np.zeros((2, 5), dtype=np.float32))


@pytest.mark.parametrize("extra, message", [
    (["--template", "a photo"], "must contain '{}' exactly once"),
    (["--classes", "cat"], "names 1 class"),
    (["--classes", "cat,cat"], "label 'cat' twice"),
])
def test_zero_shot_bad_options_fail_in_one_line(clip_store, extra, message):
    root, _ = clip_store
    r = embed("fit-head", "zero-shot", "--store", root / "c.h5", "--weights", root / "clip.pt", *extra)
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output


def test_zero_shot_needs_a_clip_image_store(tmp_path):
    from embedstore.ingest import build

    make_image_folder(tmp_path / "photos", per_class=3)
    build(tmp_path / "photos", tmp_path / "t.h5", encoder="test:tiny", workers=0, precision="fp32", progress=False)
    r = embed("fit-head", "zero-shot", "--store", tmp_path / "t.h5", "--classes", "cat,dog")
    assert r.exit_code == 2 and "CLIP model's image tower" in r.output and "test:tiny" in r.output
    assert len(r.output.strip().splitlines()) == 1
    (tmp_path / "texts.csv").write_text("text,label\na cat sat,cat\na dog ran,dog\nthe cat,cat\nthe dog,dog\n")
    build(tmp_path / "texts.csv", tmp_path / "x.h5", encoder="test:hash-text", workers=0, progress=False)
    r = embed("fit-head", "zero-shot", "--store", tmp_path / "x.h5", "--classes", "cat,dog")
    assert r.exit_code == 2 and "holds text vectors" in r.output
    r = embed("fit-head", "logistic", "--store", tmp_path / "t.h5", "--classes", "cat,dog")
    assert r.exit_code == 2 and "options of `fit-head zero-shot`" in r.output
