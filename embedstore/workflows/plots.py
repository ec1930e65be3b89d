"""PNG plots for head reports (matplotlib, imported only when plots are asked for)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import HeadError


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise HeadError("--plots needs matplotlib: pip install matplotlib") from None
    return plt


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
    fig.savefig(path, dpi=120)
    plt.close(fig)
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
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def head_plots(report, out_dir: str | Path) -> list[str]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [plot_confusion(report.test["confusion"], out_dir / "confusion.png", f"{report.head}: test confusion")]
    if report.param and len(report.curve) > 1:
        paths.append(plot_curve(report.curve, report.param, out_dir / "validation_curve.png", f"{report.head}: {report.param} sweep"))
    return [str(p) for p in paths]
