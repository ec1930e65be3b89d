"""`timm:` encoders: timm's own configs and transforms, feature-API layers, local weights only offline.

Small random-init timm models (a ResNet-18 and a ViT-Tiny) are saved as weight files and passed as
--weights, as a user without hub access would."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import embed, make_image_folder

timm = pytest.importorskip("timm")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Random-init weight files of a CNN and a ViT, saved with their ImageNet classifiers (as hub files are)."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("timm-weights")
    torch.manual_seed(0)
    out = {}
    for arch in ("resnet18", "vit_tiny_patch16_224"):
        model = timm.create_model(arch, pretrained=False).eval()
        save_file(model.state_dict(), root / f"{arch}.safetensors")
        out[arch] = root / f"{arch}.safetensors"
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), root / "resnet18.pth")
    out["resnet18.pth"] = root / "resnet18.pth"
    return out


def _timm_reference(arch: str, wfile, paths) -> np.ndarray:
    """What timm alone makes of the images: its eval transform, its pooled pre-logits, L2-normalised."""
    from safetensors.torch import load_file

    model = timm.create_model(arch, pretrained=False, num_classes=0).eval()
    sd = {k: v for k, v in load_file(str(wfile)).items() if not k.startswith(model.pretrained_cfg["classifier"] + ".")}
    model.load_state_dict(sd)
    tf = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
    x = torch.stack([tf(Image.open(p).convert("RGB")) for p in paths])
    with torch.inference_mode():
        v = model(x).float()
    return torch.nn.functional.normalize(v, dim=1).numpy()


def test_curated_table_is_timms_own_config():
    from embedstore.encoders.timm_models import CONFIGS, preprocess_from_timm

    for cfg in CONFIGS:
        name = cfg.id.split(":", 1)[1]
        with torch.device("meta"):
            model = timm.create_model(name, pretrained=False, num_classes=0)
        assert cfg.preprocess == preprocess_from_timm(timm.data.resolve_model_data_config(model), cfg.id), cfg.id
        assert cfg.dim == (getattr(model, "head_hidden_size", None) or model.num_features), cfg.id
        assert cfg.family == ("vit" if hasattr(model, "patch_embed") else "cnn"), cfg.id


@pytest.mark.parametrize("data_cfg", [
    dict(input_size=(3, 224, 224), interpolation="bicubic", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), crop_pct=0.95, crop_mode="center"),
    dict(input_size=(3, 224, 224), interpolation="bilinear", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_pct=0.875, crop_mode="squash"),
    dict(input_size=(3, 196, 196), interpolation="bicubic", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), crop_pct=1.0, crop_mode="center"),
])
def test_preprocess_builds_the_pixels_timms_create_transform_builds(data_cfg):
    from embedstore.encoders.config import build_transform
    from embedstore.encoders.timm_models import preprocess_from_timm

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (301, 415, 3), dtype=np.uint8))
    ours = build_transform(preprocess_from_timm(data_cfg))(img)
    theirs = timm.data.create_transform(**data_cfg)(img)
    assert ours.shape == theirs.shape
    assert torch.allclose(ours, theirs, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("arch, layer, dim", [
    ("resnet18", None, 512),
    ("resnet18", "layer3", 256),
    ("vit_tiny_patch16_224", None, 192),
    ("vit_tiny_patch16_224", "blocks.5", 192),
])
def test_build_with_a_timm_cnn_and_vit_from_a_weights_file(tmp_path, weights, arch, layer, dim):
    from embedstore.store import open_store

    photos = make_image_folder(tmp_path / "photos", per_class=3, size=(260, 240))  # larger than the input: timm's crop
    args = ["build", photos, "--store", tmp_path / "s.h5", "--encoder", f"timm:{arch}", "--weights", weights[arch],
            "--workers", 0, "--precision", "fp32", "--dtype", "float32", "--json"]
    r = embed(*args, *(["--layer", layer] if layer else []))
    assert r.exit_code == 0, r.output
    with open_store(tmp_path / "s.h5") as st:
        vs = st.select_set()
        prov = vs.provenance
        rows = st.rows(vs.name)
        X, uris = rows.load(), [str(u) for u in rows.uris]
    assert prov["encoder"] == f"timm:{arch}" and prov["dim"] == dim == X.shape[1]
    assert prov["layer"] == (layer or "penultimate")
    assert prov["preprocess"]["interpolation"] == "bicubic"
    if layer is None:  # the same vectors timm alone makes, with its own transform
        ref = _timm_reference(arch, weights[arch], [u.removeprefix("file://") for u in uris])
        assert np.abs(X - ref).max() < 1e-4


def test_weights_file_formats_and_layers(weights):
    from embedstore.encoders import create_encoder

    a = create_encoder("timm:resnet18", weights=str(weights["resnet18"]))
    b = create_encoder("timm:resnet18", weights=str(weights["resnet18.pth"]))
    assert a.cfg.dim == b.cfg.dim == 512 and a.weights_sha256 != b.weights_sha256
    assert a.layer_names() == ["act1", "layer1", "layer2", "layer3", "layer4"]
    x = torch.randn(1, 3, 224, 224)
    v = create_encoder("timm:vit_tiny_patch16_224", weights=str(weights["vit_tiny_patch16_224"]), layer="blocks.2")
    assert v.cfg.layer == "blocks.2" and v(x).shape == (1, 192)
    hooked = create_encoder("timm:resnet18", weights=str(weights["resnet18"]), layer="layer2.0.conv1")  # any module: a hook
    assert hooked(x).shape == (1, 128)


def test_offline_without_weights_fails_at_once_with_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    make_image_folder(tmp_path / "photos", per_class=1)
    r = embed("build", tmp_path / "photos", "--store", tmp_path / "s.h5", "--encoder", "timm:resnet18", "--workers", 0)
    assert r.exit_code != 0
    line = r.output.strip().splitlines()[-1]
    assert "not in the local Hugging Face cache" in line and "--weights FILE" in line and "hf download timm/resnet18.a1_in1k" in line
    assert "Traceback" not in r.output


@pytest.mark.parametrize("encoder_id, match", [
    ("timm:resnt18", "did you mean resnet18"),
    ("timm:resnet18.bogus", "no pretrained tag 'bogus'.*resnet18.a1_in1k"),
    ("tim:resnet18", "did you mean 'timm:resnet18'"),
])
def test_wrong_timm_ids_say_what_exists(encoder_id, match):
    from embedstore.encoders import create_encoder
    from embedstore.errors import EncoderError

    with pytest.raises(EncoderError, match=match):
        create_encoder(encoder_id)


def test_weights_of_another_architecture_are_refused_in_one_line(weights, tmp_path):
    make_image_folder(tmp_path / "photos", per_class=1)
    r = embed("build", tmp_path / "photos", "--store", tmp_path / "s.h5", "--encoder", "timm:resnet34",
              "--weights", weights["resnet18"], "--workers", 0)
    assert r.exit_code != 0
    assert "cannot load --weights" in r.output and "timm:resnet34" in r.output and "Traceback" not in r.output


def test_encoders_lists_timm_models_and_their_layers_offline():
    r = embed("encoders", "timm:*", "--json")
    assert r.exit_code == 0, r.output
    rows = {x["id"]: x for x in json.loads(r.output)}
    assert rows["timm:vit_small_patch14_dinov2.lvd142m"]["input_size"] == 518
    assert rows["timm:resnet50.a1_in1k"]["dim"] == 2048
    r = embed("encoders", "timm:*")
    assert "timm:<model>" in r.output
    r = embed("encoders", "--layers", "timm:vit_tiny_patch16_224", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)[:2] == ["blocks.0", "blocks.1"]


def test_finetune_blocks_of_timm_models():
    """`finetune --unfreeze N` thaws the last N blocks: ViT blocks, EfficientNet stage blocks, ResNet stages."""
    from embedstore.encoders.blocks import blocks

    with torch.device("meta"):
        vit = timm.create_model("vit_tiny_patch16_224", num_classes=0)
        eff = timm.create_model("tf_efficientnet_lite0", num_classes=0)
        res = timm.create_model("resnet18", num_classes=0)
    assert blocks(vit) == [f"blocks.{i}" for i in range(12)]
    assert len(blocks(eff)) == 16 and blocks(eff)[:2] == ["blocks.0.0", "blocks.1.0"]
    assert blocks(res) == ["layer1", "layer2", "layer3", "layer4"]
