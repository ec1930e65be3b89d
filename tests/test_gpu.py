"""The CUDA paths against the CPU fp32 result: the embedding service under bf16/fp16 autocast with
channels_last, a whole build, a head fit, and the parity of predict / search / serve on a store
built on the GPU. Run on a GPU machine: `bash scripts/test.sh -m gpu`."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from conftest import make_image_folder

pytestmark = pytest.mark.gpu
COS_MIN = 0.999


@pytest.fixture(scope="module", autouse=True)
def cuda():
    import torch

    if not torch.cuda.is_available():
        pytest.skip("the gpu tests need a CUDA device (run them on the GPU machine)")
    return torch.device("cuda")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("gpu") / "photos", classes=("cat", "dog", "owl"), per_class=12,
                             size=(80, 64))


def _cos(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _all_vectors(store):
    from embedstore.store import open_store

    with open_store(store) as st:
        rows = st.rows(st.select_set().name)
    order = np.argsort(rows.ids)
    return rows.ids[order], rows.load()[order]


@pytest.mark.parametrize("encoder", ["effnet-lite:lite0", "test:tiny"])
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_embedding_service_on_cuda_matches_cpu_fp32(photos, encoder, precision):
    import torch
    from PIL import Image

    from embedstore.embedding import EmbeddingService

    files = sorted(photos.rglob("*.png"))[:8]
    cpu = EmbeddingService.create(encoder, device="cpu", precision="fp32")
    gpu = EmbeddingService.create(encoder, device="cuda", precision=precision)
    assert gpu.channels_last == (gpu.cfg.family == "cnn")
    x = torch.stack([cpu.transform(Image.open(f).convert("RGB")) for f in files])
    assert (_cos(gpu.forward(x), cpu.forward(x)) >= COS_MIN).all()
    a = np.concatenate([gpu.embed_image_file(str(f)) for f in files])
    b = np.concatenate([cpu.embed_image_file(str(f)) for f in files])
    assert (_cos(a, b) >= COS_MIN).all()


def test_open_clip_vit_on_cuda_matches_cpu_fp32(photos, tmp_path):
    """A ViT (a seeded random-init open_clip ViT-B-32, offline) under bf16 autocast, images and texts."""
    import open_clip
    import torch

    from embedstore.embedding import EmbeddingService

    torch.manual_seed(0)
    torch.save(open_clip.create_model("ViT-B-32", pretrained=None).state_dict(), tmp_path / "clip.pt")
    w = str(tmp_path / "clip.pt")
    cpu = EmbeddingService.create("open_clip:ViT-B-32", weights=w, device="cpu", precision="fp32")
    gpu = EmbeddingService.create("open_clip:ViT-B-32", weights=w, device="cuda", precision="bf16")
    f = str(sorted(photos.rglob("*.jpg"))[0])
    assert _cos(gpu.embed_image_file(f), cpu.embed_image_file(f))[0] >= COS_MIN
    t = ["a photo of a cat", "a dog"]
    assert (_cos(gpu.embed_texts(t), cpu.embed_texts(t)) >= COS_MIN).all()  # tokens go to the model's device


def test_build_on_cuda_matches_the_cpu_fp32_build(photos, tmp_path):
    from embedstore.ingest import build

    g = build(photos, tmp_path / "g.h5", device="cuda", progress=False)
    c = build(photos, tmp_path / "c.h5", device="cpu", precision="fp32", workers=0, progress=False)
    assert g.device.startswith("cuda") and g.precision in ("bf16", "fp16") and g.encoded == c.encoded == 36
    ids_g, Xg = _all_vectors(tmp_path / "g.h5")
    ids_c, Xc = _all_vectors(tmp_path / "c.h5")
    assert list(ids_g) == list(ids_c)
    assert (_cos(Xg, Xc) >= COS_MIN).all()


def test_logistic_head_fits_on_cuda_like_on_cpu(photos, tmp_path):
    from embedstore.heads.fit import fit_head
    from embedstore.ingest import build

    build(photos, tmp_path / "s.h5", device="cpu", precision="fp32", workers=0, progress=False)
    rg, hg = fit_head(tmp_path / "s.h5", "logistic", device="cuda", progress=False)
    rc, hc = fit_head(tmp_path / "s.h5", "logistic", device="cpu", progress=False)
    assert rg.chosen == rc.chosen
    _, X = _all_vectors(tmp_path / "s.h5")
    assert np.abs(hg.predict_proba(X) - hc.predict_proba(X)).max() < 1e-3


def test_doors_agree_on_a_store_built_on_cuda(photos, tmp_path):
    """predict, search by image and the server's predict, all on CUDA, against the stored vectors."""
    import embedstore
    from embedstore.heads.fit import fit_head
    from embedstore.ingest import build
    from embedstore.modelfile import load_head
    from embedstore.search.query import SearchContext
    from embedstore.serve.server import open_api

    build(photos, tmp_path / "s.h5", device="cuda", progress=False)
    fit_head(tmp_path / "s.h5", "logistic", out=tmp_path / "head", progress=False)
    head, _ = load_head(tmp_path / "head")
    ids, X = _all_vectors(tmp_path / "s.h5")
    rep = embedstore.predict(tmp_path / "head", photos, store=tmp_path / "p.h5", device="cuda", progress=False)
    _, Xp = _all_vectors(tmp_path / "p.h5")
    assert (_cos(Xp, X) >= COS_MIN).all()
    P = head.predict_proba(X)
    by_id = {r["id"]: r for r in rep.rows}
    agree = np.mean([by_id[i]["label"] == str(head.classes_[p.argmax()]) for i, p in zip(ids, P)])
    assert agree == 1.0
    ctx = SearchContext(tmp_path / "s.h5", device="cuda")
    api = open_api(tmp_path / "s.h5", head=str(tmp_path / "head"), device="cuda")
    for k in range(0, len(ids), 7):
        f = photos / ids[k]
        assert _cos(ctx.vector_for_image(f), X[k : k + 1])[0] >= COS_MIN
        got = json.loads(api.handle("POST", "/api/predict", {}, {"content-type": "image/png"}, f.read_bytes()).body)
        assert got["label"] == str(head.classes_[P[k].argmax()]) and abs(got["prob"] - P[k].max()) < 5e-3


def test_jpegs_decoded_on_cuda_match_the_cpu_decode(photos):
    """`--decode device` on a GPU: nvJPEG, then the resize and scaling on the GPU, against the same
    files decoded on the CPU (embedding/pixels.py; the CPU form of this test is in test_pixels.py)."""
    import torch

    from PIL import Image

    from embedstore.embedding import EmbeddingService
    from embedstore.embedding.pixels import Pixels

    svc = EmbeddingService.create("effnet-lite:lite0", device="cpu", precision="fp32")
    pp = svc.cfg.preprocess
    files = [f.read_bytes() for f in sorted(photos.rglob("*.jpg"))]
    ex = Image.new("RGB", (1, 1)).getexif()
    ex[0x0112] = 6  # a portrait phone photo: nvJPEG ignores EXIF, the orientation is applied after
    b = io.BytesIO()
    Image.open(io.BytesIO(files[0])).save(b, "JPEG", quality=90, exif=ex.tobytes())
    files.append(b.getvalue())
    parts = [Pixels(pp, uint8=True).for_device(d) for d in files]
    assert parts[-1].orientation == 6
    x, failed, on_cpu = Pixels(pp).batch_on_device(parts, "cuda")
    assert not failed and not on_cpu and x.is_cuda and x.shape == (len(files), 3, pp.input_size, pp.input_size)
    want = torch.stack([Pixels(pp)(d) for d in files])
    # nvJPEG's IDCT and the GPU's resize round differently from libjpeg-turbo's and the CPU's
    assert (x.cpu() - want).abs().mean() < 0.02
    assert (_cos(svc.forward(x.cpu()), svc.forward(want)) >= COS_MIN).all()


def test_build_with_decode_device_on_cuda_matches_the_cpu_build(tmp_path):
    from embedstore.ingest import build

    photos = make_image_folder(tmp_path / "photos", classes=("cat", "dog", "owl"), per_class=12, size=(320, 240))
    g = build(photos, tmp_path / "g.h5", device="cuda", decode="device", progress=False)
    c = build(photos, tmp_path / "c.h5", device="cpu", precision="fp32", workers=0, progress=False)
    assert g.decode == "device" and g.decoded_on_device == 18 and g.encoded == c.encoded == 36  # 18 JPEGs, 18 PNGs
    ids_g, Xg = _all_vectors(tmp_path / "g.h5")
    ids_c, Xc = _all_vectors(tmp_path / "c.h5")
    assert list(ids_g) == list(ids_c)
    assert (_cos(Xg, Xc) >= COS_MIN).all()


def test_batches_for_the_gpu_are_pinned():
    """The DataLoader pins what a batch's `pin_memory` pins: without the method a Batch went unpinned."""
    import torch

    from embedstore.ingest.loader import Loaded, collate

    from embedstore.embedding.pixels import JpegFile

    mixed = collate([(Loaded(0, "a"), torch.zeros(3, 4, 4, dtype=torch.uint8)), (Loaded(1, "b"), JpegFile(torch.zeros(9, dtype=torch.uint8)))])
    pixels = mixed.pin_memory().pixels
    assert pixels[0].is_pinned() and isinstance(pixels[1], JpegFile)  # the file stays for nvJPEG to read
    assert collate([(Loaded(0, "a"), torch.zeros(3, 4, 4))]).pin_memory().pixels.is_pinned()
