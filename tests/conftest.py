"""Fixture builders: tiny image folders and manifests written into tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
if "EMBEDSTORE_CACHE_DIR" not in os.environ:
    # A cache per test process (weights hashes, compiled encoders), removed at exit so that runs do not
    # pile up 100 MB folders in /tmp.
    import atexit
    import shutil
    import tempfile

    os.environ["EMBEDSTORE_CACHE_DIR"] = _cache = tempfile.mkdtemp(prefix="embedstore-cache-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)

import numpy as np
import pytest
from PIL import Image

CLASS_COLOURS = {"cat": (200, 60, 40), "dog": (40, 160, 60), "owl": (50, 60, 200)}


def write_image(path: Path, colour=(128, 128, 128), seed: int = 0, size=(48, 40), fmt: str | None = None) -> Path:
    """A noisy image tinted with `colour`: same colour -> similar vectors."""
    rng = np.random.default_rng(seed)
    base = np.array(colour, dtype=np.float32)[None, None, :]
    arr = np.clip(base + rng.normal(0, 40, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt)
    return path


def make_image_folder(root: Path, classes=("cat", "dog"), per_class: int = 6, size=(48, 40), seed: int = 0) -> Path:
    for c_i, c in enumerate(classes):
        for i in range(per_class):
            ext = ".jpg" if i % 2 == 0 else ".png"
            write_image(root / c / f"{c}_{i:03d}{ext}", CLASS_COLOURS.get(c, (128, 128, 128)), seed=seed * 1000 + c_i * 100 + i, size=size)
    return root


def add_bad_files(root: Path, folder: str = "cat") -> dict[str, str]:
    """Corrupt, truncated, zero-byte and non-image files; returns id -> expected reason fragment."""
    d = root / folder
    good = write_image(root / "_tmp.jpg", seed=99, size=(64, 64))
    data = good.read_bytes()
    good.unlink()
    (d / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (d / "empty.jpg").write_bytes(b"")
    (d / "notes.txt").write_text("not an image at all")
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20)
    return {
        f"{folder}/truncated.jpg": "truncated",
        f"{folder}/empty.jpg": "empty file",
        f"{folder}/notes.txt": "not an image",
        f"{folder}/corrupt.png": "",
    }


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "photos")


@pytest.fixture
def build_tiny():
    """Build with the seeded test encoder, fp32, in-process decode: fast and deterministic."""
    from embedstore.ingest import build

    def run(source, store, **kw):
        opts = dict(encoder="test:tiny", workers=0, precision="fp32", progress=False, batch_size=4, shard_rows=4)
        opts.update(kw)
        return build(source, store, **opts)

    return run


def built_once(tmp_path_factory, key: str, make) -> Path:
    """A folder that `make(folder)` fills once per test run, whichever pytest-xdist worker asks
    first (a file lock makes the others wait, then reuse it). For stores built by a real encoder:
    a module-scoped fixture alone is built again on each worker that runs some of its tests, and
    again whenever pytest tears it down between them. Whoever uses the folder must not change it."""
    import shutil

    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the run's temp folder, shared by its workers (fresh each run)
    root = base / "built-once" / key
    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root) + ".lock"):
        if not (root.parent / f"{key}.done").exists():
            shutil.rmtree(root, ignore_errors=True)  # a make that failed part way
            root.mkdir()
            make(root)
            (root.parent / f"{key}.done").touch()
    return root


def embed(*args):
    """Run the `embed` CLI in-process (typer's CliRunner); arguments may be paths or numbers."""
    from typer.testing import CliRunner

    from embedstore.cli.main import app

    return CliRunner().invoke(app, [str(a) for a in args])


def synthetic_store(path: Path, n: int, dim: int, shards: int, seed: int = 0) -> None:
    """A store of clustered unit vectors committed as `shards` shard files."""
    from embedstore.store import ItemRows, open_store

    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(30, dim))
    X = centers[rng.integers(0, 30, n)] + 0.7 * rng.normal(size=(n, dim))
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float16)
    attrs = {"encoder": "synthetic", "dim": dim, "dtype": "float16", "normalize": "l2", "modality": "image"}
    with open_store(path, mode="a", create=True) as st:
        for part in np.array_split(np.arange(n), shards):
            items = ItemRows()
            ids = [f"v{i:06d}" for i in part]
            for i in ids:
                items.append(id=i, uri=f"/data/{i}.jpg", sha256=i, status="ok")
            st.commit("synthetic-0000", attrs, items, ids, ids, X[part], {})


def copy_store(src: Path, dst: Path) -> Path:
    """Copy a store and its sidecar folder to a new name (stores are movable as the pair)."""
    import shutil

    shutil.copy(src, dst)
    shutil.copytree(src.with_name(src.name + ".d"), dst.with_name(dst.name + ".d"))
    return dst
