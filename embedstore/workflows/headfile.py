"""Saving and loading heads without pickle: a folder with head.json and arrays.npz.

head.json holds the head kind, its parameters, classes, the provenance of the vectors it was
trained on, metrics, and the sha256 of arrays.npz; arrays.npz is read with allow_pickle=False.
Loading checks every one of these, so a tampered, truncated or foreign file fails with a reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from ..errors import HeadError

FORMAT = "embedstore-head"
VERSION = 1
META, ARRAYS = "head.json", "arrays.npz"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_head(out: str | Path, head, meta: dict, overwrite: bool = False) -> Path:
    """Write the head folder atomically: a complete new folder replaces the old one, or nothing changes."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise HeadError(f"{out} already exists; pass --force to replace it, or choose another --out")
    if out.exists() and not (out / META).is_file():
        raise HeadError(f"{out} exists and is not a saved head; refusing to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        arrays = head.state_arrays()
        np.savez(tmp / ARRAYS, **arrays)
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "kind": head.kind,
            "params": head.get_params(),
            "classes": [str(c) for c in head.classes_],
            "n_features": int(head.n_features_in_),
            "arrays": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in arrays.items()},
            "arrays_sha256": _sha256(tmp / ARRAYS),
            **meta,
        }
        (tmp / META).write_text(json.dumps(doc, indent=2, default=str))
        for f in (tmp / ARRAYS, tmp / META):
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def load_head(path: str | Path):
    """Load (head estimator, head.json dict); never executes code from the files."""
    from ..heads import HEAD_NAMES, head_class

    path = Path(path)
    if not path.exists():
        raise HeadError(f"head {path} does not exist; train one with `embed fit-head logistic --store S.h5 --out {path}`")
    if not (path / META).is_file():
        raise HeadError(f"{path} is not a saved head (no {META}); pass the folder that `embed fit-head --out` wrote")
    try:
        doc = json.loads((path / META).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HeadError(f"{path / META} is not valid JSON ({e}); the head is damaged: re-run `embed fit-head`") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise HeadError(f"{path / META} is not an embedstore head (format {doc.get('format') if isinstance(doc, dict) else None!r})")
    if not isinstance(doc.get("version"), int) or doc["version"] > VERSION:
        raise HeadError(f"head {path} has format version {doc.get('version')}; this embedstore reads up to {VERSION}: upgrade embedstore")
    kind = doc.get("kind")
    if kind not in HEAD_NAMES:
        raise HeadError(f"head {path} is of unknown kind {kind!r}; known: {', '.join(HEAD_NAMES)}")
    arrays_path = path / ARRAYS
    if not arrays_path.is_file():
        raise HeadError(f"head {path} lacks {ARRAYS}; the head is incomplete: re-run `embed fit-head`")
    if _sha256(arrays_path) != doc.get("arrays_sha256"):
        raise HeadError(f"{arrays_path} does not match the sha256 recorded in {META}: the file was changed or truncated; re-run `embed fit-head`")
    cls = head_class(kind)
    try:
        with np.load(arrays_path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise HeadError(f"{arrays_path} cannot be read safely ({str(e).splitlines()[0][:120]}); re-run `embed fit-head`") from None
    expected = set(cls._state_arrays)
    if set(arrays) != expected:
        raise HeadError(f"{arrays_path} holds arrays {sorted(arrays)}; a {kind} head needs {sorted(expected)}")
    for k, v in arrays.items():
        if v.dtype.kind not in "fiu" or list(v.shape) != doc.get("arrays", {}).get(k, {}).get("shape"):
            raise HeadError(f"array {k} in {arrays_path} has dtype {v.dtype} and shape {v.shape}, not what {META} records")
    classes, n_features = doc.get("classes"), doc.get("n_features")
    if not isinstance(classes, list) or len(classes) < 2 or not isinstance(n_features, int):
        raise HeadError(f"{path / META} has no valid classes / n_features; re-run `embed fit-head`")
    try:
        head = cls.from_state(doc.get("params", {}), classes, n_features, arrays)
    except TypeError as e:
        raise HeadError(f"{path / META} has parameters this {kind} head does not take ({e})") from None
    return head, doc
