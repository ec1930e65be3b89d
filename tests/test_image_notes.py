"""What decoding hides from the encoder's input, said in the build summary with counts and ids:
transparency (embedded from the colour under it, as torchvision/timm/open_clip read it), 16-bit
files whose values fill little of their range (12-bit data: nearly black), the first frame of an
animated GIF or a multi-page TIFF, and JPEGs whose corrupt data libjpeg decoded with a warning on
stderr. The pixels (so the vectors) are the same as before: only the summary says more."""

from __future__ import annotations

import html
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import embed, write_image

TINY = ("--encoder", "test:tiny", "--precision", "fp32", "--workers", 0, "--batch-size", 8, "-q")


def _png16_rgb(path: Path, rgb: np.ndarray) -> Path:
    """A 16-bit RGB PNG (PIL writes none): signature, IHDR (bit depth 16, colour type 2), IDAT, IEND."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    h, w, _ = rgb.shape
    rows = b"".join(b"\0" + rgb[y].astype(">u2").tobytes() for y in range(h))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    return path


def _corrupt_jpeg(path: Path) -> Path:
    """A JPEG with bytes of its entropy-coded data flipped: libjpeg loses sync and says
    "Corrupt JPEG data: N extraneous bytes before marker 0xd9", yet decodes it."""
    a = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    b = io.BytesIO()
    Image.fromarray(a).save(b, "JPEG", quality=90)
    d = bytearray(b.getvalue())
    sos = d.find(b"\xff\xda")
    for k in range(sos + 200, sos + 260, 7):
        d[k] ^= 0x55
    path.write_bytes(bytes(d))
    return path


def _frames(path: Path, fmt: str) -> Path:
    frames = [Image.fromarray(np.full((24, 24, 3), c, np.uint8)) for c in ((200, 0, 0), (0, 200, 0), (0, 0, 200))]
    frames[0].save(path, fmt, save_all=True, append_images=frames[1:])
    return path


def make_odd_images(root: Path) -> dict[str, str]:
    """One file of each kind a note is given for, beside look-alikes that get none; id -> kind."""
    root.mkdir(parents=True, exist_ok=True)
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., :3] = (30, 200, 90)  # the colour a viewer never shows
    rgba[8:24, 8:24] = (200, 40, 40, 255)
    Image.fromarray(rgba).save(root / "cutout.png")
    Image.fromarray(np.full((32, 32, 4), 255, np.uint8)).save(root / "opaque_rgba.png")  # alpha, none transparent
    Image.new("P", (16, 16), 0).save(root / "palette.png", transparency=0)
    rng = np.random.default_rng(1)
    Image.fromarray((rng.random((24, 24)) * 4095).astype(np.uint16)).save(root / "grey12.png")  # 12 bits in 16
    Image.fromarray((rng.random((24, 24)) * 65535).astype(np.uint16)).save(root / "grey16.png")  # the full range
    _png16_rgb(root / "rgb12.png", (rng.random((16, 16, 3)) * 4095).astype(np.uint16))
    _frames(root / "anim.gif", "GIF")
    _frames(root / "pages.tif", "TIFF")
    _corrupt_jpeg(root / "corrupt.jpg")
    write_image(root / "plain.jpg", seed=3)
    write_image(root / "plain.png", seed=4)
    return {"cutout.png": "transparency", "palette.png": "transparency", "grey12.png": "low bit range",
            "rgb12.png": "low bit range", "anim.gif": "frames", "pages.tif": "frames", "corrupt.jpg": "corrupt JPEG data"}


def test_each_kind_of_hidden_input_is_noted_for_its_files_and_only_those(tmp_path, build_tiny, capfd):
    expected = make_odd_images(tmp_path / "odd")
    r = build_tiny(tmp_path / "odd", tmp_path / "s.h5")
    assert r.encoded == 11 and r.quarantined == 0  # stored, every one: notes are not quarantine
    got = {e["id"]: kind for kind, v in r.image_notes.items() for e in v["examples"]}
    assert got == expected
    assert {k: v["count"] for k, v in r.image_notes.items()} == {
        "transparency": 2, "low bit range": 2, "frames": 2, "corrupt JPEG data": 1}
    details = {e["id"]: e["detail"] for v in r.image_notes.values() for e in v["examples"]}
    assert details["cutout.png"] == "75% of pixels transparent"
    assert details["grey12.png"].startswith("brightest value 40") and details["grey12.png"].endswith(", 12 of 16 bits used")
    assert details["rgb12.png"] == "brightest value at most 4095 of 65535, 12 of 16 bits used"  # PIL kept the high byte
    assert details["anim.gif"] == "GIF, first of 3 frames" and details["pages.tif"] == "TIFF, first of 3 frames"
    assert details["corrupt.jpg"].startswith("Corrupt JPEG data: ") and "extraneous bytes" in details["corrupt.jpg"]
    # libjpeg's own line went into the note, not onto the terminal
    assert "Corrupt JPEG data" not in capfd.readouterr().err
    lines = [n for n in r.notes if "embedded by this build" in n]
    assert len(lines) == 4
    (t,) = [n for n in lines if "transparent" in n]
    assert t.startswith("2 images embedded by this build with transparent pixels: cutout.png (75% of pixels transparent), palette.png")
    assert "convert('RGB')" in t and "background" in t
    (c,) = [n for n in lines if "corrupt JPEG" in n]
    assert c.startswith("1 image embedded by this build with corrupt JPEG data: corrupt.jpg (Corrupt JPEG data:")


def test_notes_come_back_from_decode_workers_and_a_rebuild_of_unchanged_files_decodes_nothing(tmp_path, build_tiny):
    make_odd_images(tmp_path / "odd")
    r = build_tiny(tmp_path / "odd", tmp_path / "s.h5", workers=1)
    assert {k: v["count"] for k, v in r.image_notes.items()} == {
        "transparency": 2, "low bit range": 2, "frames": 2, "corrupt JPEG data": 1}
    again = build_tiny(tmp_path / "odd", tmp_path / "s.h5")
    assert again.unchanged == 11 and again.image_notes == {} and not any("embedded by this build" in n for n in again.notes)


@pytest.mark.parametrize("name", ["cutout.png", "palette.png", "grey12.png", "rgb12.png", "anim.gif", "pages.tif",
                                  "corrupt.jpg", "plain.jpg", "plain.png", "opaque_rgba.png", "grey16.png"])
def test_noting_leaves_the_encoders_input_as_it_was(tmp_path, name):
    """The same tensor with and without notes, and for transparent files the hidden colour's
    (PIL's convert('RGB')): existing stores' vectors keep their meaning."""
    import torch

    from embedstore.embedding import EmbeddingService
    from embedstore.sources.images import decode_image

    make_odd_images(tmp_path / "odd")
    data = (tmp_path / "odd" / name).read_bytes()
    px = EmbeddingService.create("test:tiny", device="cpu", precision="fp32", dtype="float32").pixels()
    notes: list = []
    assert torch.equal(px(data, notes), px(data))
    assert bool(notes) == (name in make_odd_images(tmp_path / "again"))  # the look-alikes get none
    if name == "cutout.png":
        hidden = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        assert (hidden[0, 0] == (30, 200, 90)).all() and np.array_equal(np.asarray(decode_image(data)), hidden)


def test_a_corrupt_jpeg_that_pil_decodes_is_noted_too(tmp_path):
    """With squash resizing PIL decodes every JPEG, and PIL drops libjpeg's warnings: libjpeg is asked too."""
    from embedstore.embedding.pixels import Pixels
    from embedstore.encoders import create_encoder

    pp = create_encoder("test:tiny").cfg.preprocess.override(resize_mode="squash")
    notes: list = []
    Pixels(pp)(_corrupt_jpeg(tmp_path / "c.jpg").read_bytes(), notes)
    assert [k for k, _ in notes] == ["corrupt JPEG data"] and "extraneous bytes" in notes[0][1]
    notes.clear()
    Pixels(pp)(write_image(tmp_path / "ok.jpg").read_bytes(), notes)
    assert notes == []


def test_the_cli_summary_says_the_notes_in_text_and_json(tmp_path):
    make_odd_images(tmp_path / "odd")
    r = embed("build", tmp_path / "odd", "--store", tmp_path / "s.h5", *TINY, "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["image_notes"]["frames"]["count"] == 2
    assert [e["id"] for e in d["image_notes"]["frames"]["examples"]] == ["anim.gif", "pages.tif"]
    assert any(n.startswith("2 images embedded by this build with several frames or pages") for n in d["notes"])
    out = embed("build", tmp_path / "odd", "--store", tmp_path / "t.h5", *TINY).output
    assert "note: 2 images embedded by this build of 16 bits whose values fill under an eighth of that range: grey12.png" in out, out
    assert "nearly black" in out and "only the first frame was embedded" in out


def test_ray_decode_tasks_carry_the_notes_to_the_write_tasks(tmp_path):
    """The Ray stages without a cluster: decode_batch's notes column, counted by the write task's helper."""
    from embedstore.encoders import create_encoder
    from embedstore.ingest.notes import add_image_notes, image_note_lines, merge_image_notes
    from embedstore.ingest.ray_stages import decode_batch

    expected = make_odd_images(tmp_path / "odd")
    names = sorted(expected)
    n = len(names)
    batch = {"k": np.arange(n), "id": np.array(names, object), "uri": np.array([str(tmp_path / "odd" / x) for x in names], object),
             "known": np.array([""] * n, object)}
    for c in ("label", "split", "text", "meta", "problem"):
        batch[c] = np.array([""] * n, object)
    batch.update(size=np.zeros(n, np.int64), mtime_ns=np.zeros(n, np.int64), relabelled=np.zeros(n, bool),
                 has_text=np.zeros(n, bool))
    out = decode_batch(batch, create_encoder("test:tiny").cfg.preprocess)
    assert out["ok"].all()
    parts = [{}, {}]
    for i, x in enumerate(names):  # two write tasks' counts, merged as the driver merges them
        add_image_notes(parts[i % 2], x, json.loads(out["notes"][i]))
    found: dict = {}
    for p in parts:
        merge_image_notes(found, json.loads(json.dumps(p)))
    assert {e["id"]: k for k, v in found.items() for e in v["examples"]} == expected
    assert len(image_note_lines(found)) == 4


def test_the_html_report_shows_the_notes_and_both_views_of_a_transparent_image(tmp_path):
    """`build --report` shows what the summary says (notes, skips) and, for each note, the images it
    names: a cut-out as a viewer shows it (white around it) and as the encoder read it (the green
    stored under the transparent pixels)."""
    import base64
    import re

    make_odd_images(tmp_path / "odd")
    (tmp_path / "odd" / "notes.txt").write_text("not an image")
    r = embed("build", tmp_path / "odd", "--store", tmp_path / "s.h5", *TINY, "--report", tmp_path / "rep")
    assert r.exit_code == 0, r.output
    page = (tmp_path / "rep" / "index.html").read_text()
    said = [line.strip() for line in r.output.splitlines() if line.strip().startswith(("note:", "skipped"))]
    assert said and all(html.escape(line) in page for line in said)  # every line the summary printed for a look
    assert "2 images with several frames or pages" in page and "layout</th>" in page
    cards = re.findall(r'<img alt="cutout.png" src="data:image/png;base64,([^"]+)"><div>([^<]*)</div>', page)
    assert [c[1].rsplit(", ", 1)[1] for c in cards] == ["as viewed", "as embedded"], cards
    corner = [Image.open(io.BytesIO(base64.b64decode(c[0]))).convert("RGB").getpixel((0, 0)) for c in cards]
    assert corner == [(255, 255, 255), (30, 200, 90)], corner
