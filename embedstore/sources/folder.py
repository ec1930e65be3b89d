"""A folder of images: one subfolder per class label, or a flat folder with labels=False."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import SourceError
from .items import Item, Source


def _walk_files(root: Path, skipped: dict[str, list[str]]):
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        hidden_dirs = [d for d in dirnames if d.startswith(".")]
        for d in hidden_dirs:
            skipped.setdefault("hidden folder", []).append(os.path.join(dirpath, d))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            if name.startswith("."):
                skipped.setdefault("hidden file", []).append(full)
            elif not os.path.isfile(full):
                skipped.setdefault("not a regular file", []).append(full)
            else:
                yield Path(full)


def list_folder(root: Path, labels: bool = True) -> Source:
    """List every non-hidden file under `root`; decoding decides later which are images."""
    root = root.resolve()
    skipped: dict[str, list[str]] = {}
    items: list[Item] = []
    for f in _walk_files(root, skipped):
        rel = f.relative_to(root).as_posix()
        label = None
        if labels:
            if "/" not in rel:
                skipped.setdefault("top-level file outside any class folder", []).append(str(f))
                continue
            label = rel.split("/", 1)[0]
        items.append(Item(id=rel, uri=str(f), label=label))
    if not items:
        extra = ""
        if skipped:
            extra = "; skipped: " + ", ".join(f"{len(v)} {k}" for k, v in skipped.items())
            if labels and "top-level file outside any class folder" in skipped:
                extra += " (for a flat folder without class subfolders, pass --no-labels)"
        raise SourceError(f"source folder {root} has no files to embed{extra}")
    return Source(path=str(root), kind="folder", items=items, skipped=skipped, has_labels=labels)
