"""The accelerated CPU forward (`--accel openvino`, embedding/accel.py) gives the eager fp32 vectors.

Parity on real images (the bundled digits) through EfficientNet-Lite0's ImageNet weights and a
random-init ViT-Tiny: cosine >= 0.999 to eager fp32 for every image. The build records the
accelerator in the vector set's attributes, not in its key or name; a set built with it is queried
eager at its recorded precision (the query doors' default) and gives its stored vectors back. A
failed import, conversion or check falls back to eager with a one-line note."""

from __future__ import annotations

import json
import pickle
import sys

import numpy as np
import pytest

from conftest import built_once, embed

COS_MIN = 0.999
LITE = "effnet-lite:lite0"


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    from embedstore.datasets import write_digits

    return built_once(tmp_path_factory, "accel-digits", lambda root: write_digits(root, per_class=3))


@pytest.fixture(scope="module")
def vit_weights(tmp_path_factory):
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vit") / "vit_tiny_patch16_224.safetensors"
    save_file(timm.create_model("vit_tiny_patch16_224", pretrained=False).eval().state_dict(), path)
    return path


def image_batch(svc, folder):
    import torch
    from PIL import Image

    files = sorted(folder.rglob("*.png"))
    return torch.stack([svc.transform(Image.open(f).convert("RGB")) for f in files])


def worst_cos(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(1).min())


@pytest.mark.slow
@pytest.mark.parametrize("encoder", [LITE, "timm:vit_tiny_patch16_224"])
def test_openvino_gives_the_eager_fp32_vectors_on_real_images(encoder, digits, vit_weights):
    pytest.importorskip("openvino")
    from embedstore.embedding.service import EmbeddingService

    weights = str(vit_weights) if encoder.startswith("timm:") else None
    eager = EmbeddingService.create(encoder, weights, device="cpu", precision="fp32", accel="none")
    fast = EmbeddingService.create(encoder, weights, device="cpu", accel="openvino")
    assert fast.precision == "fp32" and fast.accel == "openvino"
    x = image_batch(eager, digits)
    assert len(x) == 30
    want, got = eager.forward(x), fast.forward(x)
    assert fast._accel_fwd is not None and fast.accel_note is None  # it ran openvino, not a silent fallback
    assert worst_cos(got, want) >= COS_MIN
    # the float16 the store keeps hides the difference in nearly every component
    same = (np.asarray(want, np.float16) == np.asarray(got, np.float16)).mean()  # the stored bytes
    assert same >= 0.9, same


@pytest.fixture(scope="module")
def built(digits, tmp_path_factory):
    """The digits built with --accel openvino and with --accel none, at fp32."""
    pytest.importorskip("openvino")
    from embedstore.ingest import build

    def make(root):
        fast = build(digits, root / "fast.h5", encoder=LITE, accel="openvino", workers=0, progress=False, batch_size=8)
        eager = build(digits, root / "eager.h5", encoder=LITE, precision="fp32", accel="none", workers=0, progress=False,
                      batch_size=8)
        (root / "reports.pkl").write_bytes(pickle.dumps((fast, eager)))

    root = built_once(tmp_path_factory, "accel-built", make)
    fast, eager = pickle.loads((root / "reports.pkl").read_bytes())
    return root, fast, eager


def stored(store):
    from embedstore.store import open_store

    with open_store(store) as st:
        vs = st.select_set()
        rows = st.rows(vs.name)
        vecs = rows.load(np.ones(len(rows), dtype=bool))
        return vs, dict(zip(map(str, rows.ids), vecs))


@pytest.mark.slow
def test_build_records_the_accelerator_outside_the_set_key(built):
    root, fast, eager = built
    assert (fast.accel, fast.precision, eager.accel) == ("openvino", "fp32", "none")
    assert any("openvino" in n and "checked against the eager model" in n for n in fast.notes), fast.notes
    vs_fast, v_fast = stored(root / "fast.h5")
    vs_eager, v_eager = stored(root / "eager.h5")
    assert vs_fast.attrs["build_accel"] == "openvino" and vs_fast.attrs["build_accel_version"].startswith("20")
    assert vs_eager.attrs["build_accel"] == "none"
    assert vs_fast.attrs["build_precision"] == vs_eager.attrs["build_precision"] == "fp32"
    assert vs_fast.name == vs_eager.name and vs_fast.provenance == vs_eager.provenance  # same key, same set
    ids = sorted(v_fast)
    assert ids == sorted(v_eager) and len(ids) == 30
    assert worst_cos(np.stack([v_fast[i] for i in ids]), np.stack([v_eager[i] for i in ids])) >= COS_MIN


@pytest.mark.slow
def test_queries_on_an_accelerated_set_run_eager_and_find_its_vectors(built, digits):
    from embedstore.embedding.service import EmbeddingService

    root, _, _ = built
    vs, vecs = stored(root / "fast.h5")
    svc = EmbeddingService.from_provenance({**vs.provenance, "build_precision": vs.attrs["build_precision"]}, device="cpu")
    assert svc.accel == "none" and svc.precision == "fp32"
    ids = sorted(vecs)[::5]
    q = np.concatenate([svc.embed_image_file(str(digits / i)) for i in ids])
    assert worst_cos(q, np.stack([vecs[i] for i in ids])) >= COS_MIN


def test_resolve_accel_takes_openvino_only_for_fp32_image_encoders_on_cpu(monkeypatch):
    import torch

    from embedstore.embedding import accel

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(accel, "openvino_installed", lambda: True)
    assert accel.resolve_accel("auto", cpu, "image", "fp32")[0] == "openvino"
    assert accel.resolve_accel("openvino", cpu, "image", "fp32")[0] == "openvino"
    for args in ((cpu, "image", "bf16"), (gpu, "image", "fp32"), (cpu, "text", "fp32")):
        name, why = accel.resolve_accel("auto", *args)
        assert name == "none" and why.startswith("auto: "), why
    assert accel.resolve_accel("none", cpu, "image", "fp32") == ("none", "asked for")
    monkeypatch.setattr(accel, "openvino_installed", lambda: False)
    name, why = accel.resolve_accel("auto", cpu, "image", "fp32")
    assert name == "none" and "not installed" in why


@pytest.mark.parametrize("failure", ["import", "convert", "check"])
def test_a_failing_accelerator_falls_back_to_eager_with_one_note(failure, tmp_path, monkeypatch):
    """test:tiny, so this runs whether or not openvino is installed: its library, its conversion
    and its check against the eager model each fail here, and the build runs eager and says so."""
    from embedstore.embedding import accel
    from embedstore.ingest import build
    from embedstore.datasets import write_digits

    photos = write_digits(tmp_path / "digits", per_class=1)
    want = build(photos, tmp_path / "eager.h5", encoder="test:tiny", precision="fp32", accel="none", workers=0, progress=False)
    monkeypatch.setattr(accel, "openvino_installed", lambda: True)
    monkeypatch.setenv("EMBEDSTORE_CACHE_DIR", str(tmp_path / "cache"))  # no converted model from another test
    if failure == "import":
        monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` raises ImportError
    elif failure == "convert":
        pytest.importorskip("openvino")

        def refuse(model, size):
            raise RuntimeError("Cannot convert aten::made_up\nsecond line")

        monkeypatch.setattr(accel, "_convert", refuse)
    else:
        pytest.importorskip("openvino")
        real = accel.OpenVINOForward.__call__
        monkeypatch.setattr(accel.OpenVINOForward, "__call__", lambda self, x: -real(self, x))  # a wrong conversion
    r = build(photos, tmp_path / "s.h5", encoder="test:tiny", accel="openvino", workers=0, progress=False)
    assert r.accel == "none" and r.precision == "fp32"
    said = [n for n in r.notes if "openvino" in n]
    assert len(said) == 1 and "\n" not in said[0] and "ran eager fp32 instead" in said[0], r.notes
    assert {"import": "could not be imported", "convert": "could not convert test:tiny (RuntimeError: Cannot convert aten::made_up)",
            "check": "disagrees with the eager model"}[failure] in said[0]
    vs, vecs = stored(tmp_path / "s.h5")
    assert vs.attrs["build_accel"] == "none"
    _, eager = stored(tmp_path / "eager.h5")
    assert want.vector_set == r.vector_set
    assert all(np.array_equal(vecs[i], eager[i]) for i in eager)  # the eager vectors, bit for bit


def test_cli_refuses_a_bad_accel_in_one_line(tmp_path):
    from embedstore.datasets import write_digits

    photos = write_digits(tmp_path / "digits", per_class=1)
    r = embed("build", photos, "--store", tmp_path / "s.h5", "--encoder", "test:tiny", "--accel", "fast")
    assert r.exit_code != 0 and r.stderr.count("\n") == 1
    assert "--accel must be one of auto, none, openvino, not 'fast'" in r.stderr, r.stderr
    r = embed("build", photos, "--store", tmp_path / "s.h5", "--encoder", "test:tiny", "--accel", "openvino",
              "--precision", "bf16", "--device", "cpu")
    assert r.exit_code != 0 and r.stderr.count("\n") == 1
    assert "--accel openvino computes at fp32, not bf16" in r.stderr, r.stderr
    assert not (tmp_path / "s.h5").exists()


def test_build_json_reports_the_accelerator(tmp_path, monkeypatch):
    """--json carries which forward ran and why. On a CPU with native bf16, `--precision auto`
    takes exact fp32 through openvino (faster than bf16 autocast, and the fp32 vectors); an explicit
    bf16 build is never switched to openvino, nor is a set built at bf16 when it is extended."""
    from embedstore.datasets import write_digits
    from embedstore.embedding import device

    monkeypatch.delenv("EMBEDSTORE_CPU_BF16", raising=False)
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    photos = write_digits(tmp_path / "digits", per_class=1)
    args = ("--encoder", "test:tiny", "--workers", "0", "--json", "-q")
    r = embed("build", photos, "--store", tmp_path / "a.h5", *args)
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["precision"] == "fp32" and rep["accel"] == "openvino"
    assert "exact fp32 through openvino" in rep["precision_reason"]
    r = embed("build", photos, "--store", tmp_path / "s.h5", "--precision", "bf16", *args)
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["precision"] == "bf16" and rep["accel"] == "none"
    assert "openvino computes at fp32 and this set is computed at bf16" in rep["accel_reason"]
    write_digits(tmp_path / "digits", per_class=2)  # one more image per class, into the bf16 set
    r = embed("build", photos, "--store", tmp_path / "s.h5", *args)
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["encoded"] == 10 and rep["precision"] == "bf16" and rep["accel"] == "none"
    assert "built at bf16" in rep["precision_reason"]
    r = embed("build", photos, "--store", tmp_path / "n.h5", "--accel", "none", *args)  # auto without openvino: bf16
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["precision"] == "bf16"


def test_a_bf16_set_stays_bf16_when_its_catalog_is_unreadable(tmp_path, monkeypatch):
    """`auto` reads the set's precision from its shards when the catalog cannot answer (gone, or
    damaged and about to be rebuilt): it never adds fp32 vectors to a set built at bf16."""
    from embedstore.datasets import write_digits
    from embedstore.embedding import device
    from embedstore.store.shards import list_shards

    monkeypatch.delenv("EMBEDSTORE_CPU_BF16", raising=False)
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    photos = write_digits(tmp_path / "digits", per_class=1)
    args = ("--encoder", "test:tiny", "--workers", "0", "--json", "-q")
    assert embed("build", photos, "--store", tmp_path / "s.h5", "--precision", "bf16", *args).exit_code == 0
    write_digits(tmp_path / "digits", per_class=2)
    (tmp_path / "s.h5").write_bytes(b"not a catalog" * 100)  # damaged: the writer rebuilds it from the shards
    folder = next((tmp_path / "s.h5.d" / "shards").iterdir())
    r = embed("build", photos, "--store", tmp_path / "s.h5", *args)
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["precision"] == "bf16" and rep["accel"] == "none" and "built at bf16" in rep["precision_reason"]
    import h5py

    precs = {str(h5py.File(folder / n, "r").attrs["precision"]) for n in list_shards(folder)}
    assert precs == {"bf16"}
