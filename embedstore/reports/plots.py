"""PNG plots for head reports (matplotlib, imported only when plots are asked for)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..errors import EmbedstoreError


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise EmbedstoreError("plots need matplotlib: pip install matplotlib") from None
    return plt


def _save(plt, fig, path: Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:  # the temporary keeps the suffix, from which savefig takes the format
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def plot_confusion(confusion: dict, path: Path, title: str) -> Path:
    plt = _pyplot()
    labels, m = confusion["labels"], np.asarray(confusion["matrix"], dtype=float)
    norm = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    size = min(4 + 0.35 * len(labels), 20)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=90)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if len(labels) <= 30:
        for i in range(len(labels)):
            for j in range(len(labels)):
                if m[i, j]:
                    ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    fig.tight_layout()
    _save(plt, fig, path)
    return path


def plot_curve(curve: list, param: str, path: Path, title: str) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [c["value"] for c in curve]
    ax.plot(xs, [c["val_accuracy"] for c in curve], marker="o")
    if all(x > 0 for x in xs) and max(xs) / min(xs) > 50:
        ax.set_xscale("log")
    ax.set_xlabel(param)
    ax.set_ylabel("validation accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(plt, fig, path)
    return path


def head_plots(report, out_dir: str | Path) -> list[str]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [plot_confusion(report.test["confusion"], out_dir / "confusion.png", f"{report.head}: test confusion")] if report.test else []
    if report.param and len(report.curve) > 1:
        paths.append(plot_curve(report.curve, report.param, out_dir / "validation_curve.png", f"{report.head}: {report.param} sweep"))
    return [str(p) for p in paths]


def plot_score_histogram(ranked: list, threshold: float, method: str, path: Path) -> Path:
    """Anomaly scores (higher = odder) per label, with the threshold."""
    plt = _pyplot()
    by_label: dict[str, list[float]] = {}
    for r in ranked:
        by_label.setdefault(r["label"] or "(no label)", []).append(r["score"])
    fig, ax = plt.subplots(figsize=(7, 4))
    for lab, vals in sorted(by_label.items())[:20]:
        ax.hist(vals, bins=40, alpha=0.5, label=f"{lab} ({len(vals)})")
    ax.axvline(threshold, color="red", linestyle="--", label="threshold")
    ax.set_xlabel(f"{method} anomaly score (higher = odder)")
    ax.set_ylabel("items")
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(plt, fig, path)
    return path


def embedding_map(X: np.ndarray, labels: np.ndarray, path: Path, title: str, seed: int = 0) -> tuple[Path, str]:
    """A 2-D map of the vectors coloured by label: UMAP when installed, else PCA. Returns (path, method)."""
    plt = _pyplot()
    try:
        import umap  # type: ignore

        Y = umap.UMAP(random_state=seed).fit_transform(X)
        method = "UMAP"
    except ImportError:
        Xc = X - X.mean(axis=0)
        _, _, Vt = np.linalg.svd(Xc[: min(len(Xc), 20000)], full_matrices=False)
        Y = Xc @ Vt[:2].T
        method = "PCA"
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    names = sorted(set(labels.tolist()))
    cmap = plt.get_cmap("tab20" if len(names) > 10 else "tab10")
    for k, lab in enumerate(names[:40]):
        m = labels == lab
        ax.scatter(Y[m, 0], Y[m, 1], s=6, alpha=0.7, color=cmap(k % cmap.N), label=lab or "(no label)")
    if len(names) <= 20:
        ax.legend(fontsize=7, markerscale=2, loc="best")
    ax.set_title(f"{title} ({method})")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    _save(plt, fig, path)
    return path, method


def thumbnail_png(uri: str, size: int = 96, viewed: bool = False) -> bytes | None:
    """A small PNG of an image file, or None when it cannot be read. Transparent pixels show the
    colour stored under them, as the encoder reads them; `viewed`: over white, as a viewer shows them."""
    import io

    from PIL import Image

    from ..sources.images import DecodeError, thumbnail

    try:
        with Image.open(uri) as im:
            im.load()
            if viewed and ("A" in im.getbands() or "transparency" in im.info):
                rgba = im.convert("RGBA")
                im = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                im.alpha_composite(rgba)
            im = thumbnail(im, size).convert("RGB")
            buf = io.BytesIO()
            im.save(buf, format="PNG")
            return buf.getvalue()
    except (OSError, ValueError, DecodeError):
        return None


def plot_training(history: list, path: Path, title: str) -> Path:
    """Training loss and validation accuracy per epoch."""
    plt = _pyplot()
    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(ep, [h["train_loss"] for h in history], marker="o", label="train loss", color="tab:red")
    ax.plot(ep, [h["val_loss"] for h in history], marker="o", label="val loss", color="tab:orange")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy")
    ax2 = ax.twinx()
    ax2.plot(ep, [h["val_accuracy"] for h in history], marker="s", label="val accuracy", color="tab:blue")
    ax2.set_ylabel("validation accuracy")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=8, loc="center right")
    ax.set_title(title)
    fig.tight_layout()
    _save(plt, fig, path)
    return path
