"""Saving and loading heads and detectors without pickle: a folder with a JSON file and arrays.npz.

The JSON (head.json or detector.json) holds the kind, its parameters, what the estimator needs
besides arrays (classes, threshold), the provenance of the vectors it was fitted on, metrics, and
the sha256 of arrays.npz; arrays.npz is read with allow_pickle=False. Loading checks every one of
these, so a tampered, truncated or foreign file fails with a reason and never runs code.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .encoders.base import file_sha256
from .errors import DetectorError, HeadError
from .naming import read_tagged_json

VERSION = 1
ARRAYS = "arrays.npz"


class Kind:
    """What differs between saved heads and saved detectors."""

    def __init__(self, noun: str, meta: str, error, names, resolve, retrain: str):
        self.noun, self.meta, self.error, self.names, self.resolve, self.retrain = noun, meta, error, names, resolve, retrain
        self.format = f"embedstore-{noun}"


def _kinds():
    from .detectors import DETECTOR_NAMES, detector_class
    from .heads import HEAD_NAMES, head_class

    return {
        "head": Kind("head", "head.json", HeadError, HEAD_NAMES, head_class, "embed fit-head"),
        "detector": Kind("detector", "detector.json", DetectorError, DETECTOR_NAMES, detector_class, "embed anomalies --save"),
    }


def save_model(out: str | Path, model, meta: dict, noun: str = "head", overwrite: bool = False) -> Path:
    """Write the folder atomically: a complete new folder replaces the old one, or nothing changes."""
    k = _kinds()[noun]
    out = Path(out)
    if out.exists() and not overwrite:
        raise k.error(f"{out} already exists; pass --force to replace it, or choose another path")
    if out.exists() and not (out / k.meta).is_file():
        raise k.error(f"{out} exists and is not a saved {noun}; refusing to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        arrays = model.state_arrays()
        np.savez(tmp / ARRAYS, **arrays)
        doc = {
            "format": k.format,
            "version": VERSION,
            "kind": model.kind,
            "params": model.get_params(),
            **model.state_fields(),
            "arrays": {name: {"shape": list(v.shape), "dtype": str(v.dtype)} for name, v in arrays.items()},
            "arrays_sha256": file_sha256(tmp / ARRAYS),
            **meta,
        }
        (tmp / k.meta).write_text(json.dumps(doc, indent=2, default=str))
        for f in (tmp / ARRAYS, tmp / k.meta):
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


def load_model(path: str | Path, noun: str = "head"):
    """Load (estimator, JSON dict); never executes code from the files."""
    k = _kinds()[noun]
    E, meta = k.error, k.meta
    path = Path(path)
    if not path.exists():
        raise E(f"{noun} {path} does not exist; make one with `{k.retrain}`")
    doc = read_tagged_json(path / meta, k.format, E, f"a saved {noun}",
                           f"pass the folder that `{k.retrain}` wrote, or re-run it")
    if not isinstance(doc.get("version"), int) or doc["version"] > VERSION:
        raise E(f"{noun} {path} has format version {doc.get('version')}; this embedstore reads up to {VERSION}: upgrade embedstore")
    kind = doc.get("kind")
    if kind not in k.names:
        raise E(f"{noun} {path} is of unknown kind {kind!r}; known: {', '.join(k.names)}")
    arrays_path = path / ARRAYS
    if not arrays_path.is_file():
        raise E(f"{noun} {path} lacks {ARRAYS}; it is incomplete: re-run `{k.retrain}`")
    if file_sha256(arrays_path) != doc.get("arrays_sha256"):
        raise E(f"{arrays_path} does not match the sha256 recorded in {meta}: the file was changed or truncated; re-run `{k.retrain}`")
    cls = k.resolve(kind)
    try:
        with np.load(arrays_path, allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise E(f"{arrays_path} cannot be read safely ({str(e).splitlines()[0][:120]}); re-run `{k.retrain}`") from None
    expected = set(cls.state_array_names())
    if set(arrays) != expected:
        raise E(f"{arrays_path} holds arrays {sorted(arrays)}; a {kind} {noun} needs {sorted(expected)}")
    for name, v in arrays.items():
        if v.dtype.kind not in "fiu" or list(v.shape) != doc.get("arrays", {}).get(name, {}).get("shape"):
            raise E(f"array {name} in {arrays_path} has dtype {v.dtype} and shape {v.shape}, not what {meta} records")
    try:
        model = cls.from_state(doc, arrays)
    except (TypeError, ValueError, KeyError) as e:
        raise E(f"{path / meta} does not describe a valid {kind} {noun} ({e}); re-run `{k.retrain}`") from None
    return model, doc


def save_head(out: str | Path, head, meta: dict, overwrite: bool = False) -> Path:
    return save_model(out, head, meta, "head", overwrite)


def load_head(path: str | Path):
    """Load (head estimator, head.json dict); never executes code from the files."""
    return load_model(path, "head")
