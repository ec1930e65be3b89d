"""Preprocessing: resize modes, overrides, provenance compatibility, small sources, the models' own configs."""

import numpy as np
import pytest
import torch
from PIL import Image

from embedstore.encoders.config import Preprocess, build_transform, canonical_json, small_image_preprocess
from embedstore.errors import EncoderError, OptionError

LITE = Preprocess(input_size=224, resize_size=256, interpolation="bicubic", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
# What Preprocess.to_dict() gave before resize_mode existed: stores name their vector sets by its hash.
LITE_OLD_DICT = {"input_size": 224, "resize_size": 256, "interpolation": "bicubic", "mean": [0.5, 0.5, 0.5],
                 "std": [0.5, 0.5, 0.5], "crop": "center", "antialias": True, "exif_transpose": True}


def halves(size=(40, 30)) -> Image.Image:
    """Left half red, right half blue."""
    arr = np.zeros((size[1], size[0], 3), np.uint8)
    arr[:, : size[0] // 2] = (255, 0, 0)
    arr[:, size[0] // 2:] = (0, 0, 255)
    return Image.fromarray(arr)


def test_default_resize_mode_keeps_the_old_provenance_dict():
    assert LITE.to_dict() == LITE_OLD_DICT
    assert canonical_json(LITE.override().to_dict()) == canonical_json(LITE_OLD_DICT)
    squash = LITE.override(resize_mode="squash")
    assert squash.to_dict() == {**LITE_OLD_DICT, "resize_mode": "squash"}
    assert canonical_json(squash.to_dict()) != canonical_json(LITE_OLD_DICT)  # another preprocessing, another set


@pytest.mark.parametrize("pp", [LITE, LITE.override(crop_pct=1, interpolation="nearest", resize_mode="longest"),
                                Preprocess(32, 32, resize_mode="longest", fill=128)])
def test_from_dict_inverts_to_dict(pp):
    assert Preprocess.from_dict(pp.to_dict()) == pp


def test_from_dict_refuses_what_it_cannot_rebuild():
    with pytest.raises(EncoderError, match="does not know: gamma"):
        Preprocess.from_dict({**LITE_OLD_DICT, "gamma": 2.2})
    with pytest.raises(EncoderError, match="resize_mode must be one of shortest, squash, longest, got 'stretch'"):
        Preprocess.from_dict({**LITE_OLD_DICT, "resize_mode": "stretch"})


def test_override_sets_resize_size_from_crop_pct():
    assert LITE.override(crop_pct=1.0).resize_size == 224
    assert LITE.override(crop_pct=0.875) == LITE
    assert LITE.override(crop_pct=0.9).resize_size == 249
    assert LITE.override(interpolation="bilinear").interpolation == "bilinear"
    assert LITE.override() == LITE


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"crop_pct": 0}, r"^--crop-pct must be a number in \(0, 1\].*got 0"),
        ({"crop_pct": 1.5}, r"^--crop-pct .* got 1.5"),
        ({"crop_pct": "big"}, r"^--crop-pct .* got 'big'"),
        ({"interpolation": "lanczos"}, "^--interpolation must be one of bilinear, bicubic, nearest, got 'lanczos'"),
        ({"resize_mode": "crop"}, "^--resize-mode must be one of shortest, squash, longest, got 'crop'"),
    ],
)
def test_override_rejects_bad_values_in_one_line(kwargs, match):
    with pytest.raises(OptionError, match=match) as e:
        LITE.override(**kwargs)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("mode", ["shortest", "squash", "longest"])
@pytest.mark.parametrize("size", [(40, 30), (30, 40), (300, 200)])
def test_every_mode_gives_the_input_size_in_both_variants(mode, size):
    pp = LITE.override(resize_mode=mode)
    img = halves(size)
    x, u = build_transform(pp)(img), build_transform(pp, uint8=True)(img)
    assert x.shape == u.shape == (3, 224, 224)
    assert x.dtype == torch.float32 and u.dtype == torch.uint8
    from embedstore.encoders.config import batch_normalizer

    assert torch.allclose(batch_normalizer(pp)(u[None])[0], x, atol=1e-6)
    import pickle  # DataLoader workers and Ray tasks receive the transform pickled

    assert torch.equal(pickle.loads(pickle.dumps(build_transform(pp, uint8=True)))(img), u)


def test_squash_keeps_the_whole_image_where_the_crop_loses_its_sides():
    arr = np.zeros((20, 80, 3), np.uint8)  # wide: red | green | blue in quarters, 1/4, 1/2, 1/4
    arr[:, :20], arr[:, 20:60], arr[:, 60:] = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    img = Image.fromarray(arr)
    plain = Preprocess(input_size=32, resize_size=32, mean=(0, 0, 0), std=(1, 1, 1))
    squash = build_transform(plain.override(resize_mode="squash"), uint8=True)(img)
    assert (squash[0, :, :6] > 200).all() and (squash[1, :, 10:22] > 200).all() and (squash[2, :, -6:] > 200).all()
    crop = build_transform(plain, uint8=True)(img)  # shorter side 20 -> 32, then the centre 32 of 128 columns
    assert (crop[1] > 200).all() and (crop[0] < 50).all() and (crop[2] < 50).all()  # only green is left
    assert build_transform(plain.override(crop_pct=0.5), uint8=True)(img).shape == (3, 32, 32)


def test_longest_pads_with_fill_and_keeps_the_aspect_ratio():
    pp = Preprocess(input_size=32, resize_size=32, mean=(0, 0, 0), std=(1, 1, 1), resize_mode="longest", fill=128)
    u = build_transform(pp, uint8=True)(halves((64, 32)))  # 64x32 -> 32x16, padded 8 rows top and bottom
    assert (u[:, :8] == 128).all() and (u[:, -8:] == 128).all()
    assert (u[0, 8:24, :16] > 200).all() and (u[2, 8:24, 16:] > 200).all()


@pytest.mark.parametrize("mode", ["shortest", "squash", "longest"])
@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_transforms_match_open_clip(mode, interpolation):
    from open_clip.transform import image_transform

    pp = Preprocess(input_size=64, resize_size=64, interpolation=interpolation, resize_mode=mode)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 50, 3), dtype=np.uint8))
    ref = image_transform(64, False, mean=pp.mean, std=pp.std, resize_mode=mode, interpolation=interpolation)(img)
    assert torch.allclose(build_transform(pp)(img), ref, atol=1e-5)


def test_small_image_preprocess_decides_by_the_sampled_sizes():
    small = [(32, 32)] * 7 + [(640, 480)] * 3
    pp, note = small_image_preprocess(LITE, small)
    assert pp == Preprocess(224, 224, "bicubic", LITE.mean, LITE.std, resize_mode="squash")  # what the benchmark chose
    assert note.startswith("most images (7 of 10 sampled) are smaller than the 224 px input; "
                           "resized straight to 224 (squash, bicubic) instead of the model's resize shorter side "
                           "to 256 + centre crop 224 (shortest, bicubic)")
    assert "\n" not in note
    assert small_image_preprocess(LITE, [(32, 32)] * 5 + [(640, 480)] * 5) == (LITE, None)  # half is not most
    assert small_image_preprocess(LITE, []) == (LITE, None)
    assert small_image_preprocess(LITE, [(800, 100)] * 10)[0].resize_mode == "squash"  # the shorter side counts
    bilinear = LITE.override(interpolation="bilinear")
    assert small_image_preprocess(bilinear, small)[0].interpolation == "bilinear"  # the model's interpolation stays
    # a model that already squashes without a crop (SigLIP) keeps its preprocessing, and the summary says so
    siglip = Preprocess(224, 224, "bicubic", resize_mode="squash")
    same, note = small_image_preprocess(siglip, small)
    assert same == siglip and "smaller than the 224 px input; kept the model's preprocessing" in note


def test_open_clip_preprocessing_comes_from_the_models_config():
    import open_clip

    from embedstore.encoders.open_clip_models import preprocess_from_open_clip

    siglip = preprocess_from_open_clip(open_clip.get_pretrained_cfg("ViT-B-16-SigLIP", "webli"))
    assert (siglip.resize_mode, siglip.interpolation, siglip.mean) == ("squash", "bicubic", (0.5, 0.5, 0.5))
    clipa = preprocess_from_open_clip(open_clip.get_pretrained_cfg("ViT-L-14-CLIPA", "datacomp1b"))
    assert (clipa.resize_mode, clipa.interpolation) == ("squash", "bilinear")
    openai = preprocess_from_open_clip(open_clip.get_pretrained_cfg("ViT-B-32", "openai"))
    assert (openai.resize_mode, openai.interpolation, openai.resize_size) == ("shortest", "bicubic", 224)
    assert "resize_mode" not in openai.to_dict()  # OpenAI CLIP sets keep their names


@pytest.mark.slow
def test_open_clip_encoder_transform_equals_open_clips_own(monkeypatch):
    """A random-init model told to squash (as SigLIP is) gives the pixels open_clip's own preprocess gives."""
    import open_clip

    from embedstore.encoders import create_encoder
    from embedstore.encoders.weights import STRUCTURE_ONLY

    made = {}
    real = open_clip.create_model_and_transforms

    def squashing(*a, **kw):
        kw.update(image_resize_mode="squash", image_interpolation="bilinear", image_mean=(0.5, 0.5, 0.5))
        made["out"] = real(*a, **kw)
        return made["out"]

    monkeypatch.setattr(open_clip, "create_model_and_transforms", squashing)
    enc = create_encoder("open_clip:ViT-S-32", weights=STRUCTURE_ONLY)
    pp = enc.cfg.preprocess
    assert (pp.resize_mode, pp.interpolation, pp.mean, pp.input_size) == ("squash", "bilinear", (0.5, 0.5, 0.5), 224)
    img = halves((90, 40))
    assert torch.allclose(enc.transform(img), made["out"][2](img), atol=1e-5)


@pytest.mark.slow
def test_clip_text_tokens_go_to_the_text_models_device():
    import open_clip

    from embedstore.encoders.open_clip_models import _TextTower

    model = open_clip.create_model("ViT-S-32", pretrained=None).eval().to("meta")  # any device but the tokenizer's
    out = _TextTower(model, "ViT-S-32")(["a photo of a cat", "a dog"])
    assert out.device.type == "meta" and out.shape == (2, model.text_projection.shape[1])


def test_torchvision_preprocessing_is_the_weights_own():
    import torchvision.models as tvm

    from embedstore.encoders.torchvision_models import preprocess_from_weights

    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (300, 411, 3), dtype=np.uint8))
    for arch, tag in [("resnet50", "IMAGENET1K_V2"), ("efficientnet_b0", "IMAGENET1K_V1")]:
        wenum = tvm.get_model_weights(arch)[tag]
        pp = preprocess_from_weights(wenum, f"torchvision:{arch}")
        assert torch.allclose(build_transform(pp)(img), wenum.transforms()(img), atol=1e-5)
    assert preprocess_from_weights(tvm.get_model_weights("resnet50")["IMAGENET1K_V2"], "x").resize_size == 232


def test_build_resizes_small_images_straight_to_the_input_and_says_so(tmp_path):
    """Images smaller than the model's input: the build squashes instead of cropping a border away,
    records it in the set's provenance, says so in the summary, and every later door (search by
    image, predict) embeds with that same preprocessing. A store that already holds vectors made
    the model's own way keeps extending them."""
    from conftest import embed, make_image_folder

    from embedstore.ingest import build
    from embedstore.search.query import search
    from embedstore.store import open_store

    src = make_image_folder(tmp_path / "small", classes=("cat", "dog"), per_class=5, size=(20, 16))
    r = build(src, tmp_path / "s.h5", encoder="test:tiny", workers=0, precision="fp32", progress=False)
    assert any("smaller than the 32 px input" in n and "squash" in n for n in r.notes)
    with open_store(tmp_path / "s.h5") as st:
        pp = st.select_set().provenance["preprocess"]
    assert pp["resize_mode"] == "squash" and pp["resize_size"] == pp["input_size"] == 32
    hit = search(tmp_path / "s.h5", image=src / "dog" / "dog_003.png", k=1).hits[0]
    assert hit["id"] == "dog/dog_003.png" and hit["score"] > 0.9999
    out = embed("build", src, "--store", tmp_path / "s.h5", "--encoder", "test:tiny", "--precision", "fp32")
    assert out.exit_code == 0 and "0 new vectors" in out.output  # the same set: nothing to do

    # a store made the model's own way (as before this choice existed) is extended, not split
    old = build(src, tmp_path / "old.h5", encoder="test:tiny", workers=0, precision="fp32", progress=False,
                resize_mode="shortest", crop_pct=32 / 36)
    more = make_image_folder(tmp_path / "small", classes=("owl",), per_class=3, size=(20, 16), seed=3)
    again = build(more, tmp_path / "old.h5", encoder="test:tiny", workers=0, precision="fp32", progress=False)
    assert again.vector_set == old.vector_set and any("kept the model's preprocessing" in n for n in again.notes)

    # and the other way: a store made from small images keeps its set when larger images join the source
    make_image_folder(tmp_path / "small", classes=("emu",), per_class=20, size=(64, 48), seed=4)  # now most are large
    grown = build(src, tmp_path / "s.h5", encoder="test:tiny", workers=0, precision="fp32", progress=False)
    assert grown.vector_set == r.vector_set and grown.encoded == 23 and grown.unchanged == 10
    assert any("kept the small-image preprocessing" in n for n in grown.notes), grown.notes
    with open_store(tmp_path / "s.h5") as st:
        assert len(st.vector_sets()) == 1


@pytest.mark.parametrize("args, message", [
    (["--resize-mode", "crop"], "error: --resize-mode must be one of shortest, squash, longest"),
    (["--crop-pct", "1.5"], "error: --crop-pct must be a number in (0, 1]"),
    (["--crop-pct", "0"], "error: --crop-pct must be a number in (0, 1]"),
    (["--interpolation", "lanczos"], "error: --interpolation must be one of bilinear, bicubic, nearest"),
    (["--layout", "weird"], "--layout must be one of auto, classes, splits, flat"),
])
def test_bad_preprocessing_and_layout_options_fail_in_one_line_and_leave_the_store(tmp_path, args, message):
    from conftest import embed, make_image_folder

    src = make_image_folder(tmp_path / "photos", per_class=3)
    base = ["build", src, "--store", tmp_path / "s.h5", "--encoder", "test:tiny", "--precision", "fp32", "-q"]
    assert embed(*base).exit_code == 0
    before = {p: p.read_bytes() for p in sorted(tmp_path.glob("s.h5*")) + sorted((tmp_path / "s.h5.d").rglob("*")) if p.is_file()}
    r = embed(*base, *args)
    assert r.exit_code == 2 and message in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert not any(name in r.output for name in ("resize_mode", "crop_pct")), r.output  # the flags, not Python names
    after = {p: p.read_bytes() for p in sorted(tmp_path.glob("s.h5*")) + sorted((tmp_path / "s.h5.d").rglob("*")) if p.is_file()}
    assert after == before


def test_a_build_that_chooses_the_preprocessing_repairs_a_damaged_shard_instead_of_refusing(tmp_path):
    """Choosing the small-image preprocessing reads the store's sets first; a damaged shard there is
    moved aside and its items re-embedded, as the build's own open does, not a refusal."""
    from conftest import embed, make_image_folder
    from test_integrity import _flip_vector_byte, _shards

    src = make_image_folder(tmp_path / "small", classes=("cat", "dog"), per_class=5, size=(20, 16))
    args = ["build", src, "--store", tmp_path / "s.h5", "--encoder", "test:tiny", "--precision", "fp32"]
    assert embed(*args).exit_code == 0
    _flip_vector_byte(_shards(tmp_path / "s.h5")[0])
    r = embed(*args)
    assert r.exit_code == 0 and "was damaged" in r.output and "10 new vectors" in r.output, r.output
    assert list((tmp_path / "s.h5.d" / "damaged").rglob("*.h5"))
    assert embed("verify", tmp_path / "s.h5").exit_code == 0
