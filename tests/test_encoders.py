import numpy as np
import pytest
import torch
from PIL import Image

from embedstore.encoders import create_encoder, get_config, list_encoders
from embedstore.errors import EncoderError, WeightsUnavailableError


def test_registry_lists_every_family():
    ids = {c.id for c in list_encoders()}
    assert {"effnet-lite:lite0", "test:tiny", "torchvision:resnet50", "torchvision:vit_b_16", "open_clip:ViT-B-32/openai"} <= ids
    assert {c.id for c in list_encoders("torchvision:*")} >= {"torchvision:resnet18", "torchvision:efficientnet_b0", "torchvision:convnext_tiny"}
    cfg = get_config("effnet-lite:lite0")
    assert (cfg.dim, cfg.preprocess.input_size, cfg.preprocess.mean) == (1280, 224, (0.5, 0.5, 0.5))


@pytest.mark.parametrize(
    "bad, match",
    [
        ("resnet50", "no source prefix.*torchvision:resnet50"),
        ("torchvison:resnet50", "did you mean 'torchvision:resnet50'"),
        ("test:tiny2", "did you mean test:tiny"),
        ("torchvision:resnet5O", "unknown encoder"),
        ("effnet-lite:", "names no model"),
    ],
)
def test_wrong_ids_suggest_close_matches(bad, match):
    with pytest.raises(EncoderError, match=match):
        create_encoder(bad)


def test_tiny_is_deterministic():
    a, b = create_encoder("test:tiny"), create_encoder("test:tiny")
    assert a.weights_sha256 == b.weights_sha256
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(a(x), b(x)) and a(x).shape == (2, 32)


def test_offline_effnet_lite_has_real_imagenet_weights():
    """The bundled weights classify scikit-learn's sample photos correctly (palace, daisy)."""
    from sklearn.datasets import load_sample_image

    from embedstore.encoders.lite import bundled_weights_path, lite0_model, timm_name

    enc = create_encoder("effnet-lite:lite0")
    net = lite0_model(num_classes=1000)
    net.load_state_dict({timm_name(k): v for k, v in torch.load(bundled_weights_path(), weights_only=True).items()})
    for name, imagenet_class in [("china.jpg", 698), ("flower.jpg", 985)]:
        x = enc.transform(Image.fromarray(load_sample_image(name)))[None]
        with torch.inference_mode():
            feats = enc(x)
            logits = net.classifier.eval()(feats)
        assert feats.shape == (1, 1280)
        assert int(logits.argmax()) == imagenet_class


def test_weights_file_loads_into_architecture(tmp_path):
    from safetensors.torch import save_file

    from embedstore.encoders.testing import tiny_cnn

    model = tiny_cnn()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.0)
    save_file(model.state_dict(), tmp_path / "w.safetensors")
    torch.save({"state_dict": model.state_dict()}, tmp_path / "w.pth")
    default = create_encoder("test:tiny")
    a = create_encoder("test:tiny", weights=str(tmp_path / "w.safetensors"))
    b = create_encoder("test:tiny", weights=str(tmp_path / "w.pth"))
    assert a.weights_sha256 == b.weights_sha256 != default.weights_sha256
    x = torch.randn(1, 3, 32, 32)
    assert torch.allclose(a(x), b(x)) and not torch.allclose(a(x), default(x))


def test_bad_weights_files(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(EncoderError, match="cannot read weights"):
        create_encoder("test:tiny", weights=str(tmp_path / "junk.pth"))
    torch.save({"other.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(EncoderError, match="do not fit test:tiny"):
        create_encoder("test:tiny", weights=str(tmp_path / "other.pth"))
    with pytest.raises(EncoderError, match="does not exist"):
        create_encoder("test:tiny", weights=str(tmp_path / "missing.pth"))


def test_layer_selection_pools_intermediate_features():
    enc = create_encoder("test:tiny", layer="2")
    assert enc.cfg.layer == "2" and enc.cfg.dim == 32
    assert enc(torch.randn(3, 3, 32, 32)).shape == (3, 32)
    assert create_encoder("test:tiny", layer="0").cfg.dim == 16
    with pytest.raises(EncoderError, match="no layer 'fc9'"):
        create_encoder("test:tiny", layer="fc9")


def test_torchvision_offline_fails_fast_with_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-cache"))
    with pytest.raises(WeightsUnavailableError, match="--weights FILE"):
        create_encoder("torchvision:resnet18")


def test_torchvision_with_local_weights(tmp_path):
    import torchvision

    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    enc = create_encoder("torchvision:resnet18", weights=str(tmp_path / "r18.pth"))
    assert enc.cfg.dim == 512 and enc.cfg.layer == "penultimate:fc"
    assert (enc.cfg.preprocess.resize_size, enc.cfg.preprocess.input_size) == (256, 224)
    assert enc(torch.randn(2, 3, 224, 224)).shape == (2, 512)
    assert create_encoder("torchvision:resnet18", weights=str(tmp_path / "r18.pth"), layer="layer3").cfg.dim == 256


@pytest.mark.slow
def test_open_clip_image_tower_with_local_weights(tmp_path):
    import open_clip

    model = open_clip.create_model("ViT-S-32", pretrained=None)
    torch.save(model.state_dict(), tmp_path / "clip.pt")
    enc = create_encoder("open_clip:ViT-S-32", weights=str(tmp_path / "clip.pt"))
    assert enc.cfg.layer == "image_embed" and enc.cfg.preprocess.interpolation == "bicubic"
    out = enc(torch.randn(2, 3, enc.cfg.preprocess.input_size, enc.cfg.preprocess.input_size))
    assert out.shape == (2, enc.cfg.dim)


def test_open_clip_offline_without_weights_fails_fast():
    with pytest.raises(WeightsUnavailableError, match="--weights FILE"):
        create_encoder("open_clip:ViT-B-32/openai")


def test_open_clip_local_tag_without_weights_says_to_pass_them():
    """Vectors made from --weights FILE name the tag "local": asked for without the file, the error
    said "choose one of: " and an empty list."""
    from embedstore.errors import EncoderError

    with pytest.raises(EncoderError, match="made from a local weights file.*pass the same --weights FILE"):
        create_encoder("open_clip:ViT-S-32/local")
