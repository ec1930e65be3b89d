"""The one decode and preprocessing of image files (embedding/pixels.py): torchvision's JPEG decoder
and tensor resize against PIL's, EXIF orientation, the files left to PIL, the same reasons for bad
files, and `--decode device` (JPEG files decoded in batches on the encoder's device) against the
workers' decode, with the device as a parameter (CUDA in tests/test_gpu.py)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import add_bad_files, embed, make_image_folder


def _photo(scale: int = 1, seed: int = 0, which: int = 0) -> Image.Image:
    """A real photo (scikit-learn's samples, offline), resized by `scale`/2, with a little noise."""
    from sklearn.datasets import load_sample_images

    base = load_sample_images().images[which]
    img = Image.fromarray(base).resize((base.shape[1] * scale // 2, base.shape[0] * scale // 2), Image.LANCZOS)
    a = np.asarray(img).astype(np.float32) + np.random.default_rng(seed).normal(0, 5, (img.height, img.width, 3))
    return Image.fromarray(a.clip(0, 255).astype(np.uint8))


def _jpeg(img: Image.Image, **kw) -> bytes:
    b = io.BytesIO()
    img.save(b, "JPEG", quality=90, **kw)
    return b.getvalue()


def _pil_way(pp, data: bytes, uint8: bool = True):
    """The decode before embedding/pixels.py: PIL decodes, PIL resizes."""
    from embedstore.encoders.config import build_transform
    from embedstore.sources.images import decode_image

    return build_transform(pp, uint8=uint8)(decode_image(data, pp.exif_transpose))


@pytest.fixture(scope="module")
def lite0():
    from embedstore.embedding import EmbeddingService

    return EmbeddingService.create("effnet-lite:lite0", device="cpu", precision="fp32", dtype="float32")


@pytest.mark.parametrize("mode", ["shortest", "longest"])
def test_jpegs_decode_to_pils_pixels_but_for_rounding_and_give_the_same_vectors(lite0, mode):
    from embedstore.embedding.pixels import Pixels

    pp = lite0.cfg.preprocess.override(resize_mode=mode)
    files = [_jpeg(_photo(s, s, w)) for s in (1, 2, 5) for w in (0, 1)] + [_jpeg(_photo(2).convert("L"))]
    ours = Pixels(pp, uint8=True)
    cos = []
    for data in files:
        a, b = ours(data), _pil_way(pp, data)
        assert a.dtype == torch.uint8 and a.shape == b.shape == (3, pp.input_size, pp.input_size)
        off = (a.int() - b.int()).abs()  # the antialiased resize rounds differently, now and then
        assert off.max() <= 2 and (off > 0).float().mean() < 0.01
        x, y = Pixels(pp)(data), _pil_way(pp, data, uint8=False)
        va, vb = lite0.forward(torch.stack([x, y]))
        cos.append(float(va @ vb))
    assert min(cos) >= 0.9999, cos


def test_where_the_tensor_resize_strays_pil_decodes(lite0):
    """Squash resizing (unequal scales: up to 7 levels off PIL's), nearest-neighbour resizing (a
    neighbouring row of PIL's at some sizes) and preprocessing without antialiasing (PIL
    antialiases regardless) keep PIL's decode and pixels exactly."""
    import dataclasses

    from embedstore.embedding.pixels import Pixels

    files = [_jpeg(_photo(s, s, w).crop((0, 0, 200 * s, 300))) for s in (1, 2) for w in (0, 1)]
    plain = lite0.cfg.preprocess
    for pp in (plain.override(resize_mode="squash"), plain.override(interpolation="nearest"),
               dataclasses.replace(plain, antialias=False)):
        assert all(Pixels(pp, uint8=True).jpeg_orientation(d) is None for d in files)
        assert all(torch.equal(Pixels(pp, uint8=True)(d), _pil_way(pp, d)) for d in files)
    assert all(Pixels(plain).jpeg_orientation(d) == 1 for d in files)  # the default: torchvision decodes


def _xmp(orientation: int) -> bytes:
    return (b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
            b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
            b'xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="' + str(orientation).encode() +
            b'"/></rdf:RDF></x:xmpmeta><?xpacket end="w"?>')


def test_orientation_only_in_xmp_is_applied_as_pil_applies_it(lite0):
    from embedstore.embedding.pixels import Pixels

    img = _photo(1).crop((0, 0, 300, 200))
    pp = lite0.cfg.preprocess.override(resize_mode="longest")
    data = _jpeg(img, xmp=_xmp(6))
    assert Pixels(pp).jpeg_orientation(data) == 6
    off = (Pixels(pp, uint8=True)(data).int() - _pil_way(pp, data).int()).abs()
    assert off.max() <= 2 and (off > 0).float().mean() < 0.01


def test_exif_orientation_is_applied_as_pil_applies_it(lite0):
    import dataclasses

    from embedstore.embedding.pixels import Pixels

    img = _photo(1).crop((0, 0, 300, 200))  # not square: orientations 5-8 swap the sides
    for turn in (True, False):
        pp = dataclasses.replace(lite0.cfg.preprocess, exif_transpose=turn, resize_mode="longest")
        ours = Pixels(pp, uint8=True)
        seen = set()
        for o in range(1, 9):
            ex = img.getexif()
            ex[0x0112] = o
            data = _jpeg(img, exif=ex.tobytes())
            a, b = ours(data), _pil_way(pp, data)
            off = (a.int() - b.int()).abs()
            assert off.max() <= 2 and (off > 0).float().mean() < 0.01, (turn, o)
            seen.add(a.numpy().tobytes())
        assert len(seen) == (8 if turn else 1)  # each orientation differs when applied, none when not


def test_other_formats_and_cmyk_jpegs_keep_pils_decode_exactly(lite0, tmp_path):
    from embedstore.embedding.pixels import Pixels

    pp = lite0.cfg.preprocess
    img = _photo(1)
    files = {}
    for fmt, mode in (("PNG", "RGB"), ("WEBP", "RGB"), ("GIF", "P"), ("JPEG", "CMYK")):
        b = io.BytesIO()
        img.convert(mode).save(b, fmt)
        files[fmt + mode] = b.getvalue()
    for name, data in files.items():
        assert torch.equal(Pixels(pp, uint8=True)(data), _pil_way(pp, data)), name
        assert torch.equal(Pixels(pp)(data), _pil_way(pp, data, uint8=False)), name


def test_bad_files_get_the_reasons_pil_gives(lite0):
    from embedstore.embedding.pixels import Pixels
    from embedstore.sources.images import DecodeError, decode_image

    good = _jpeg(_photo(1))
    bad = {"truncated": good[: len(good) // 2], "junk": b"not an image", "cut header": good[:40],
           "garbled": good[:600] + bytes(len(good) - 602) + good[-2:]}  # ends like a JPEG, scans are zeros
    for name, data in bad.items():
        with pytest.raises(DecodeError) as theirs:
            decode_image(data)
        with pytest.raises(DecodeError) as ours:
            Pixels(lite0.cfg.preprocess)(data)
        assert str(ours.value) == str(theirs.value), name


@pytest.mark.parametrize("device", ["cpu"])  # "cuda": tests/test_gpu.py
def test_a_batch_finished_on_the_device_equals_item_by_item(lite0, device):
    """Mixed parts as the workers send them with --decode device: JPEG files (1-D bytes) and uint8
    pixels of other formats; a file neither decoder can use comes back as a reason, left out."""
    from embedstore.embedding.pixels import Pixels

    pp = lite0.cfg.preprocess
    good = [_jpeg(_photo(s, s)) for s in (1, 2, 3)]
    ex = _photo(1).getexif()
    ex[0x0112] = 6
    turned = _jpeg(_photo(1, 5).crop((0, 0, 300, 200)), exif=ex.tobytes())
    b = io.BytesIO()
    _photo(1, 7).save(b, "PNG")
    png = b.getvalue()
    garbled = good[0][:600] + bytes(len(good[0]) - 602) + good[0][-2:]
    worker = Pixels(pp, uint8=True)
    assert worker.for_device(png) is None and worker.for_device(good[0][:-5]) is None  # PNG, truncated: the CPU's
    assert worker.for_device(turned).orientation == 6 and worker.for_device(good[0]).orientation == 1
    parts = [worker.for_device(good[0]), worker(png), worker.for_device(garbled), worker.for_device(good[1]),
             worker.for_device(turned)]
    x, failed, on_cpu = Pixels(pp).batch_on_device(parts, device)
    assert list(failed) == [2] and "corrupt" in failed[2] and on_cpu == 0
    want = torch.stack([Pixels(pp)(d) for d in (good[0], png, good[1], turned)])
    assert x.device.type == device and x.dtype == torch.float32
    assert torch.allclose(x.cpu(), want, atol=1e-6)


def test_decode_device_build_gives_the_workers_vectors_and_reasons(tmp_path):
    """A CPU build with --decode device (the encoder's process decodes the JPEGs in batches) against
    the default: the same vectors bit for bit, the same quarantine reasons, and a summary note."""
    from embedstore.ingest import build

    src = make_image_folder(tmp_path / "photos", per_class=6, size=(320, 240))  # not small: no squash, see pixels.py
    bad = add_bad_files(src)
    reps = {d: build(src, tmp_path / f"{d}.h5", encoder="effnet-lite:lite0", decode=d, workers=1, batch_size=4,
                     progress=False) for d in ("workers", "device")}
    w, d = reps["workers"], reps["device"]
    assert w.encoded == d.encoded == 12 and d.decoded_on_device == 6 and d.decode == "device"
    assert any("--decode device: 6 JPEG" in n for n in d.notes) and not any("--decode" in n for n in w.notes)
    reasons = lambda r: sorted((q["id"], q["reason"]) for q in r.quarantined_items)  # noqa: E731
    assert reasons(w) == reasons(d) and {i for i, _ in reasons(d)} == set(bad)
    from embedstore.store import open_store

    got = {}
    for name in ("workers", "device"):
        with open_store(tmp_path / f"{name}.h5") as st:
            got[name] = {i: v for ids, X in st.iter_vectors(st.select_set().name) for i, v in zip(ids, X)}
    assert got["workers"].keys() == got["device"].keys()
    assert all(np.array_equal(got["workers"][k], got["device"][k]) for k in got["workers"])


def test_decode_option_errors(image_folder, tmp_path):
    r = embed("build", image_folder, "-s", tmp_path / "s.h5", "--encoder", "test:tiny", "--decode", "gpu")
    assert r.exit_code != 0 and r.stderr.count("\n") == 1
    assert "--decode must be one of workers, device, not 'gpu'" in r.stderr, r.stderr
    r = embed("build", image_folder, "-s", tmp_path / "s.h5", "--encoder", "test:tiny", "--decode", "device", "--engine", "ray")
    assert r.exit_code != 0 and r.stderr.count("\n") == 1
    assert "--decode device applies to the local engine" in r.stderr, r.stderr
    assert not (tmp_path / "s.h5").exists()


def test_build_json_says_where_images_were_decoded(image_folder, tmp_path):
    r = embed("build", image_folder, "-s", tmp_path / "s.h5", "--encoder", "test:tiny", "--decode", "device", "--json",
              "--quiet")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["decode"] == "device" and out["decoded_on_device"] == 6  # the folder's 6 JPEGs; its PNGs by the workers


def _grey16(seed: int = 0) -> np.ndarray:
    """16-bit greyscale with detail below the 8-bit step: a photo's grey levels x 257, a horizontal
    ramp over the whole range, and noise, as a scanner or a microscope writes them."""
    grey = np.asarray(_photo(1, seed).convert("L").crop((0, 0, 320, 240)), dtype=np.float64) * 257
    ramp = np.linspace(0, 65535, 320)[None, :]
    noise = np.random.default_rng(seed).normal(0, 300, grey.shape)
    return np.clip(0.5 * grey + 0.5 * ramp + noise, 0, 65535).round().astype(np.uint16)


def _file(img: Image.Image, fmt: str) -> bytes:
    b = io.BytesIO()
    img.save(b, fmt)
    return b.getvalue()


GREY16 = {  # how 16-bit greyscale files arrive: the file's bytes and the mode PIL opens it in
    "png I;16": lambda a: (_file(Image.fromarray(a), "PNG"), "I;16"),
    "tiff I;16": lambda a: (_file(Image.fromarray(a), "TIFF"), "I;16"),
    "tiff I;16B": lambda a: (_file(Image.frombytes("I;16B", a.shape[::-1], a.astype(">u2").tobytes()), "TIFF"), "I;16B"),
    "tiff I": lambda a: (_file(Image.fromarray(a.astype(np.int32)), "TIFF"), "I"),  # 32-bit integer samples in 0..65535
}


@pytest.mark.parametrize("kind", list(GREY16))
def test_16_bit_greyscale_embeds_like_its_8_bit_version(lite0, kind):
    """PIL's conversion to RGB clips every value above 255: 16-bit greyscale was embedded as a white
    image. It is scaled to 8 bits first (the high byte), so it gives the pixels and the vector of
    the same picture saved at 8 bits (value / 257, rounded: within one level of the high byte)."""
    from embedstore.embedding.pixels import Pixels
    from embedstore.sources.images import decode_image, open_image

    a = _grey16()
    data, mode = GREY16[kind](a)
    assert open_image(data).mode == mode
    eight = _file(Image.fromarray((a / 257).round().astype(np.uint8)), "PNG")
    white = _file(Image.new("L", a.shape[::-1], 255), "PNG")
    x, y = (np.asarray(decode_image(d), dtype=np.int16) for d in (data, eight))
    assert x.shape == y.shape == (*a.shape, 3) and np.abs(x - y).max() <= 1 and x.std() > 30
    pp = lite0.cfg.preprocess
    v, v8, vw = lite0.forward(torch.stack([Pixels(pp)(d) for d in (data, eight, white)]))
    assert float(v @ v8) >= 0.999 and float(v @ vw) < 0.9, (float(v @ v8), float(v @ vw))


def test_16_bit_modes_keep_their_high_byte():
    """Every 16-bit mode PIL has, in either byte order, and mode I within 0..65535: the high byte
    (0 and 65535 go to 0 and 255; v * 257 and v << 8 both give v back), as PIL reads 16-bit RGB PNGs."""
    from embedstore.sources.images import eight_bit

    v = np.arange(256, dtype=np.uint16)
    a = np.stack([v * 257, v << 8, (v << 8) | 0xFF])
    for mode, raw in (("I;16", a.astype("<u2")), ("I;16L", a.astype("<u2")), ("I;16B", a.astype(">u2")), ("I", a.astype("<i4"))):
        img = Image.frombytes(mode, a.shape[::-1], raw.tobytes())
        out = eight_bit(img)
        assert out.mode == "L" and np.array_equal(np.asarray(out), np.stack([v, v, v]).astype(np.uint8)), mode
    rgb = Image.new("RGB", (4, 3), (1, 2, 3))
    assert eight_bit(rgb) is rgb  # 8-bit modes are passed through untouched


def _twelve_bit_jpeg() -> bytes:
    """An 8-bit JPEG whose frame header says extended sequential, 12-bit samples: what a 12-bit
    JPEG's header is (neither decoder gets past it)."""
    data = _jpeg(_photo(1).convert("L"))
    i = data.index(b"\xff\xc0")
    return data[:i] + b"\xff\xc1" + data[i + 2:i + 4] + bytes([12]) + data[i + 5:]


@pytest.mark.parametrize("kind, reason", [
    ("F", "floating-point image (PIL mode F): no fixed range to scale to 8 bits; convert it to 8- or 16-bit"),
    ("I negative", "32-bit integer image (PIL mode I) with values -1000..64535, outside 0..65535: no fixed range to "
                   "scale to 8 bits; convert it to 8- or 16-bit"),
    ("I wide", "32-bit integer image (PIL mode I) with values 0..100000, outside 0..65535: no fixed range to scale "
               "to 8 bits; convert it to 8- or 16-bit"),
    ("12-bit JPEG", "12-bit JPEG: only 8-bit JPEGs can be read; convert it to 8-bit (or to a 16-bit PNG)"),
])
def test_images_without_an_8_bit_scale_are_quarantined_with_the_fix(lite0, kind, reason):
    from embedstore.embedding.pixels import Pixels, as_tensor
    from embedstore.sources.images import DecodeError, decode_image

    ramp = np.linspace(0, 1, 320 * 240).reshape(240, 320)
    data = {"F": lambda: _file(Image.fromarray(ramp.astype(np.float32)), "TIFF"),
            "I negative": lambda: _file(Image.fromarray((ramp * 65535 - 1000).astype(np.int32)), "TIFF"),
            "I wide": lambda: _file(Image.fromarray((ramp * 100000).astype(np.int32)), "TIFF"),
            "12-bit JPEG": _twelve_bit_jpeg}[kind]()
    for decode in (decode_image, Pixels(lite0.cfg.preprocess), Pixels(lite0.cfg.preprocess, uint8=True).on_cpu):
        with pytest.raises(DecodeError) as e:
            decode(data)
        assert str(e.value) == reason, decode
    if kind == "12-bit JPEG":  # refused from its header, before any decoder; torchvision refuses it too
        with pytest.raises(DecodeError, match="12-bit JPEG"):
            Pixels(lite0.cfg.preprocess, uint8=True).for_device(data)
        assert Pixels._decode_jpeg(as_tensor(data), "cpu") is None
    else:  # --decode device leaves it to a worker, whose decode refuses it as above
        assert Pixels(lite0.cfg.preprocess, uint8=True).for_device(data) is None


def test_a_build_embeds_16_bit_greyscale_and_quarantines_float_images(tmp_path, build_tiny):
    """Through the build (test:tiny): the 16-bit PNG's vector is its 8-bit version's, not a white
    image's; the float TIFF is quarantined with its reason."""
    from embedstore.store import open_store

    a = _grey16(3)
    root = tmp_path / "scans"
    root.mkdir()
    (root / "grey16.png").write_bytes(GREY16["png I;16"](a)[0])
    Image.fromarray((a / 257).round().astype(np.uint8)).save(root / "grey8.png")
    Image.new("L", a.shape[::-1], 255).save(root / "white.png")
    Image.fromarray(a.astype(np.float32)).save(root / "float.tif")
    rep = build_tiny(root, tmp_path / "s.h5", layout="flat")
    assert rep.encoded == 3
    assert [(q["id"], q["reason"]) for q in rep.quarantined_items] == [
        ("float.tif", "floating-point image (PIL mode F): no fixed range to scale to 8 bits; convert it to 8- or 16-bit")]
    with open_store(tmp_path / "s.h5") as st:
        v = {i: x.astype(np.float64) for ids, X in st.iter_vectors(st.select_set().name) for i, x in zip(ids, X)}
    cos = lambda p, q: float(v[p] @ v[q] / np.linalg.norm(v[p]) / np.linalg.norm(v[q]))  # noqa: E731
    assert cos("grey16.png", "grey8.png") >= 0.999 and cos("grey16.png", "white.png") < cos("grey16.png", "grey8.png")


def test_thumbnails_of_16_bit_greyscale_show_the_picture(tmp_path):
    """The server's thumbnails and the reports' decode the file themselves (no encoder preprocessing),
    through the same scaling: the 8-bit version's thumbnail, not a white square."""
    from embedstore.reports.plots import thumbnail_png
    from embedstore.serve.images import DecodeBudget, ImageRefused, Thumbnailer

    a = _grey16(1)
    (tmp_path / "grey16.png").write_bytes(GREY16["png I;16"](a)[0])
    Image.fromarray((a >> 8).astype(np.uint8)).save(tmp_path / "grey8.png")
    Image.fromarray(a.astype(np.float32)).save(tmp_path / "float.tif")
    thumbs = Thumbnailer(DecodeBudget())
    for make in (lambda p, k: thumbs.png(str(tmp_path / p), k, 64), lambda p, k: thumbnail_png(str(tmp_path / p), 64)):
        got, want = (np.asarray(Image.open(io.BytesIO(make(p, k))).convert("L")) for k, p in enumerate(("grey16.png", "grey8.png")))
        assert np.array_equal(got, want) and got.std() > 30
    with pytest.raises(ImageRefused, match="cannot be read as an image any more .*mode F"):
        thumbs.png(str(tmp_path / "float.tif"), 9, 64)
    assert thumbnail_png(str(tmp_path / "float.tif"), 64) is None


def test_thumbnails_are_upright_as_the_encoder_saw_the_image(tmp_path):
    """A phone photo stored sideways with an EXIF orientation: the encoder's input is turned by it,
    and so are the server's and the reports' thumbnails (they once showed the stored pixels)."""
    from embedstore.reports.plots import thumbnail_png
    from embedstore.serve.images import DecodeBudget, Thumbnailer

    ex = Image.new("RGB", (1, 1)).getexif()
    ex[0x0112] = 6  # the stored pixels are turned 90 degrees: shown 80 wide, 120 tall
    Image.new("RGB", (120, 80), (200, 30, 30)).save(tmp_path / "turned.jpg", exif=ex.tobytes())
    for png in (Thumbnailer(DecodeBudget()).png(str(tmp_path / "turned.jpg"), 0, 60), thumbnail_png(str(tmp_path / "turned.jpg"), 60)):
        assert Image.open(io.BytesIO(png)).size == (40, 60)
