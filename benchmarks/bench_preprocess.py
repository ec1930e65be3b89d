"""Which preprocessing suits sources whose images are smaller than the encoder's input?

Embeds small real images with the default encoder (effnet-lite:lite0, ImageNet weights bundled)
under several preprocessings, and scores each vector set the same way:
  probe: LogisticRegression (C=1) on L2-normalised vectors, fitted on a fixed stratified half,
         accuracy on the other half (95% Wilson interval; McNemar exact p against the model default,
         paired on the same test items);
  P@10:  for every item, the fraction of its 10 nearest neighbours by cosine (itself excluded)
         that share its label.
Datasets (all offline):
  digits:  scikit-learn's load_digits, --per-class 8x8 digits a class upscaled to 32 px (Lanczos,
           neither of the interpolations compared), grey -> RGB;
  animals: PyPI animal-mnist 0.4 (`.venv/bin/pip install --no-deps animal-mnist`; not a project
           dependency), --per-class 28x28 silhouettes per class, 10 classes; skipped if missing;
  patches: 32 px photo patches: each of scikit-learn's two sample photos cut into 5 vertical strips,
           a strip is a class, random 64 px patches downscaled to 32 (10 classes).
The sources are square, so at crop 1.0 shortest, squash and longest give the same pixels; the
preprocessings therefore vary the crop (the model's 224/256 against none) and the interpolation.

Measured here (2 CPU cores, shared; bf16; --per-class 40: 400 images a dataset, 200 test items):
    probe accuracy / P@10       digits        animals       patches       pooled (600 test items)
    default (crop, bicubic)     0.670/0.607  0.880/0.770   0.675/0.688   0.742/0.688
    crop, bilinear              0.735/0.648   0.845/0.748   0.680/0.685   0.753/0.694 (p 0.30)
    squash, bicubic             0.645/0.587   0.880/0.810   0.715/0.712   0.747/0.703 (p 0.78)
    squash, bilinear            0.665/0.620   0.855/0.791   0.715/0.718   0.745/0.710 (p 0.89)
    squash, nearest             0.710/0.572   0.665/0.613   0.670/0.702   0.682/0.629 (p 0.001)
So `small_image_preprocess` drops the crop (squash, crop 1.0: photos +0.04, p 0.04; P@10 up on
photos and silhouettes) and keeps the model's interpolation (bilinear vs bicubic: a tie).

    .venv/bin/python benchmarks/bench_preprocess.py                  # ~5 CPU-minutes: 3 on 2 idle cores, 14 when shared
    .venv/bin/python benchmarks/bench_preprocess.py --per-class 100 --fp32
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def digits(per_class: int):
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(0)
    keep = np.concatenate([rng.choice(np.flatnonzero(d.target == c), min(per_class, int(np.sum(d.target == c))), replace=False)
                           for c in range(10)])
    imgs = [Image.fromarray((d.images[i] * 255 / 16).astype(np.uint8)).resize((32, 32), Image.LANCZOS).convert("RGB") for i in keep]
    return imgs, d.target[keep]


def animals(per_class: int):
    import gzip
    import importlib.util
    import pickle

    spec = importlib.util.find_spec("animal_mnist")
    if spec is None:
        return None
    from PIL import Image

    folder = os.path.join(os.path.dirname(spec.origin), "data", "Animal_MNIST")
    with gzip.open(os.path.join(folder, "animal_data_version_3.gz"), "rb") as f:
        x = np.asarray(pickle.load(f))
    with gzip.open(os.path.join(folder, "animal_label_version_3.gz"), "rb") as f:
        y = np.asarray(pickle.load(f)).astype(int)
    rng = np.random.default_rng(0)
    keep = np.concatenate([rng.choice(np.flatnonzero(y == c), per_class, replace=False) for c in np.unique(y)])
    return [Image.fromarray(x[i]).convert("RGB") for i in keep], y[keep]


def patches(per_class: int):
    from PIL import Image
    from sklearn.datasets import load_sample_image

    rng = np.random.default_rng(0)
    imgs, labels = [], []
    for p_i, name in enumerate(["china.jpg", "flower.jpg"]):
        photo = load_sample_image(name)  # 427 x 640
        h, w, _ = photo.shape
        strip = w // 5
        for s in range(5):
            for _ in range(per_class):
                top = rng.integers(0, h - 64)
                left = s * strip + rng.integers(0, strip - 64)
                patch = Image.fromarray(photo[top:top + 64, left:left + 64]).resize((32, 32), Image.LANCZOS)
                imgs.append(patch)
                labels.append(p_i * 5 + s)
    return imgs, np.array(labels)


def embed(enc, pp, images, bf16: bool, batch: int = 64) -> np.ndarray:
    import torch

    from embedstore.encoders.config import build_transform

    tf = build_transform(pp)
    out = []
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for i in range(0, len(images), batch):
            x = torch.stack([tf(im) for im in images[i:i + batch]]).contiguous(memory_format=torch.channels_last)
            out.append(enc(x).float().numpy())
    X = np.concatenate(out)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def mcnemar_p(a_right: np.ndarray, b_right: np.ndarray) -> float:
    """Exact two-sided McNemar test on paired correctness."""
    from scipy.stats import binomtest

    b = int(np.sum(a_right & ~b_right))
    c = int(np.sum(~a_right & b_right))
    return 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5).pvalue)


def score(X: np.ndarray, y: np.ndarray, train: np.ndarray):
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=1.0, max_iter=3000).fit(X[train], y[train])
    right = clf.predict(X[~train]) == y[~train]
    S = X @ X.T
    np.fill_diagonal(S, -np.inf)
    nn = np.argpartition(-S, 10, axis=1)[:, :10]
    p10 = float(np.mean(y[nn] == y[:, None]))
    return right, p10


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=40, help="images per class in each dataset (10 classes each)")
    ap.add_argument("--fp32", action="store_true", help="encode in float32 (default: bf16 autocast, as builds on this CPU)")
    ap.add_argument("--datasets", default="digits,animals,patches")
    args = ap.parse_args()

    import torch

    from embedstore import create_encoder

    torch.set_num_threads(os.cpu_count() or 1)
    enc = create_encoder("effnet-lite:lite0").to(torch.device("cpu"), channels_last=True)
    base = enc.cfg.preprocess
    variants = [
        ("model default", base),
        ("crop, bilinear", base.override(interpolation="bilinear")),
        ("squash, bicubic", base.override(crop_pct=1.0, resize_mode="squash")),
        ("squash, bilinear", base.override(crop_pct=1.0, resize_mode="squash", interpolation="bilinear")),
        ("squash, nearest", base.override(crop_pct=1.0, resize_mode="squash", interpolation="nearest")),
    ]
    loaders = {"digits": digits, "animals": animals, "patches": patches}
    print(f"encoder effnet-lite:lite0 ({'fp32' if args.fp32 else 'bf16 autocast'}), {os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}")
    print(f"{'dataset':<9} {'n':>5}  {'preprocessing':<80} {'probe acc [95% CI]':<24} {'p vs default':>12} {'P@10':>6} {'img/s':>6}  (pooled: test items of all datasets; P@10 their mean)")
    pooled: dict[int, tuple[list, list]] = {}
    for name in args.datasets.split(","):
        data = loaders[name](args.per_class)
        if data is None:
            print(f"{name:<9} skipped: `.venv/bin/pip install --no-deps animal-mnist` to include it")
            continue
        images, y = data
        rng = np.random.default_rng(0)
        train = np.zeros(len(y), bool)
        for c in np.unique(y):
            idx = rng.permutation(np.flatnonzero(y == c))
            train[idx[: len(idx) // 2]] = True
        ref = None
        for v_i, (label, pp) in enumerate(variants):
            t = time.perf_counter()
            X = embed(enc, pp, images, bf16=not args.fp32)
            rate = len(images) / (time.perf_counter() - t)
            right, p10 = score(X, y, train)
            ref = right if ref is None else ref
            pooled.setdefault(v_i, ([], []))[0].append(right)
            pooled[v_i][1].append(p10)
            lo, hi = wilson(int(right.sum()), len(right))
            p = "" if right is ref else f"{mcnemar_p(ref, right):.3g}"
            desc = f"{label}: {pp.describe()}"
            print(f"{name:<9} {len(y):>5}  {desc:<80} {right.mean():.3f} [{lo:.3f}, {hi:.3f}]     {p:>12} {p10:>6.3f} {rate:>6.0f}", flush=True)

    if len(pooled[0][0]) > 1:  # every test item of every dataset, paired across preprocessings
        ref = np.concatenate(pooled[0][0])
        for v_i, (label, pp) in enumerate(variants):
            right = np.concatenate(pooled[v_i][0])
            lo, hi = wilson(int(right.sum()), len(right))
            p = "" if v_i == 0 else f"{mcnemar_p(ref, right):.3g}"
            desc = f"{label}: {pp.describe()}"
            print(f"{'pooled':<9} {len(right):>5}  {desc:<80} {right.mean():.3f} [{lo:.3f}, {hi:.3f}]     {p:>12} "
                  f"{np.mean(pooled[v_i][1]):>6.3f}")


if __name__ == "__main__":
    main()
