"""Bundled example data: images written from datasets that install with the project."""

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
