"""Saving and loading heads and detectors without pickle: a folder with a JSON file and an arrays file.

The JSON (head.json or detector.json) holds the kind, its parameters, what the estimator needs
besides arrays (classes, threshold), the provenance of the vectors it was fitted on, metrics, and
the name and sha256 of its arrays file (`arrays-<token>.npz`; `arrays.npz` before format 2), read
with allow_pickle=False, and (since format 3) `content_sha256`: the sha256 of the JSON's own content
(see `content_sha256`), so an edited label, temperature or flipped byte in the JSON is refused too.
Loading checks every one of these, so a tampered, truncated or foreign file fails with a reason and
never runs code. A JSON of format 1 or 2 records no checksum of its own and is read as before.

The JSON is the single commit point: replacing a saved model writes the new arrays under a new name
beside the old ones, then replaces the JSON atomically, then deletes arrays files it no longer names.
A kill at any instant leaves the old model or the new one loadable.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import zipfile
from pathlib import Path

import numpy as np

from .atomic import atomic_path, check_replace, fault, file_sha256, remove_stale_temps, write_text_atomic
from .errors import DetectorError, HeadError
from .naming import read_tagged_json

VERSION = 3  # 2: the arrays file is named in the JSON ("arrays_file"); 3: the JSON records CHECKSUM
CHECKSUM = "content_sha256"  # the field of format 3 that holds content_sha256(doc)
CHECKSUM_SINCE = 3  # JSONs of older formats have none and are read as before
ARRAYS = "arrays.npz"  # the arrays file of format 1, which named none
_ARRAYS_FILE = re.compile(r"arrays(-[0-9a-f]+)?\.npz")


def content_sha256(doc: dict) -> str:
    """The sha256 of a saved model's JSON content: every field but CHECKSUM, as canonical JSON
    (sorted keys, no whitespace, ASCII), so the same content gives the same checksum however the
    file is laid out."""
    rest = {key: v for key, v in doc.items() if key != CHECKSUM}
    text = json.dumps(rest, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


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


def check_model_out(out: str | Path | None, force: bool, noun: str = "head", otherwise: str = "choose another path") -> bool:
    """The --force rule (atomic.check_replace) for a head or detector folder; returns whether it exists."""
    if out is None:
        return False
    k = _kinds()[noun]
    return check_replace(out, force, f"saved {noun}", k.error, [k.meta], otherwise=otherwise)


SEEN = "seen_keys"  # optional array: content keys of the items the model was fitted and selected on


def save_model(out: str | Path, model, meta: dict, noun: str = "head", overwrite: bool = False,
               seen_keys: np.ndarray | None = None) -> Path:
    """Write the folder so that a kill at any instant leaves the old model or the new one loadable.

    A new folder is written under a temporary name and renamed into place; an existing one (with
    `overwrite`) is updated in place, its JSON being the single commit point. `seen_keys`
    (evaluation.seen.content_keys of the fit and selection items) is kept beside the state arrays."""
    k = _kinds()[noun]
    out = Path(out)
    if not check_model_out(out, overwrite, noun):
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp:
            tmp.mkdir()
            _write_model(tmp, k, model, meta, seen_keys)
        return out
    remove_stale_temps(out)  # what a killed save left behind
    _write_model(out, k, model, meta, seen_keys)
    return out


def _write_model(folder: Path, k: Kind, model, meta: dict, seen_keys: np.ndarray | None = None) -> None:
    arrays = model.state_arrays()
    if seen_keys is not None:
        arrays[SEEN] = np.asarray(seen_keys, dtype=np.uint64)
    name = f"arrays-{secrets.token_hex(6)}.npz"
    with atomic_path(folder / name) as tmp:
        np.savez(tmp, **arrays)
    fault("saved:arrays")
    doc = {
        "format": k.format,
        "version": VERSION,
        "kind": model.kind,
        "params": model.get_params(),
        **model.state_fields(),
        "arrays": {a: {"shape": list(v.shape), "dtype": str(v.dtype)} for a, v in arrays.items()},
        "arrays_file": name,
        "arrays_sha256": file_sha256(folder / name),
        **meta,
    }
    doc = json.loads(json.dumps(doc, default=str))  # exactly what loading will read back
    doc.pop(CHECKSUM, None)
    doc[CHECKSUM] = content_sha256(doc)
    write_text_atomic(folder / k.meta, json.dumps(doc, indent=2))  # the commit point
    fault("saved:before-cleanup")
    for p in folder.iterdir():
        if p.name != name and _ARRAYS_FILE.fullmatch(p.name):
            p.unlink(missing_ok=True)


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
    _check_content(doc, k, path)
    kind = doc.get("kind")
    if kind not in k.names:
        raise E(f"{noun} {path} is of unknown kind {kind!r}; known: {', '.join(k.names)}")
    arrays_name = doc.get("arrays_file", ARRAYS)
    if not isinstance(arrays_name, str) or not _ARRAYS_FILE.fullmatch(arrays_name):
        raise E(f"{path / meta} names arrays file {arrays_name!r}; expected a name like arrays-<hex>.npz in the same "
                f"folder: re-run `{k.retrain}`")
    arrays_path = path / arrays_name
    if not arrays_path.is_file():
        raise E(f"{noun} {path} lacks {arrays_name}; it is incomplete: re-run `{k.retrain}`")
    if file_sha256(arrays_path) != doc.get("arrays_sha256"):
        raise E(f"{arrays_path} does not match the sha256 recorded in {meta}: the file was changed or truncated; re-run `{k.retrain}`")
    cls = k.resolve(kind)
    try:
        with np.load(arrays_path, allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise E(f"{arrays_path} cannot be read safely ({str(e).splitlines()[0][:120]}); re-run `{k.retrain}`") from None
    expected = set(cls.state_array_names()) | ({SEEN} if SEEN in arrays else set())
    if set(arrays) != expected:
        raise E(f"{arrays_path} holds arrays {sorted(arrays)}; a {kind} {noun} needs {sorted(expected)}")
    for name, v in arrays.items():
        if v.dtype.kind not in "fiu" or list(v.shape) != doc.get("arrays", {}).get(name, {}).get("shape"):
            raise E(f"array {name} in {arrays_path} has dtype {v.dtype} and shape {v.shape}, not what {meta} records")
    seen = arrays.pop(SEEN, None)
    try:
        model = cls.from_state(doc, arrays)
    except (TypeError, ValueError, KeyError) as e:
        raise E(f"{path / meta} does not describe a valid {kind} {noun} ({e}); re-run `{k.retrain}`") from None
    model.seen_keys_ = None if seen is None else seen.astype(np.uint64)
    _check_consistent(model, doc, arrays, k, path)
    return model, doc


def _check_content(doc: dict, k: Kind, path: Path) -> None:
    """The JSON is what was saved: its CHECKSUM matches its content. Checked before anything in it
    is used. A JSON without one is accepted only from the formats before CHECKSUM_SINCE."""
    meta = path / k.meta
    fix = f"re-run `{k.retrain}` to make a new {k.noun}"
    if CHECKSUM not in doc:
        if doc["version"] < CHECKSUM_SINCE:
            return  # saved before the JSON recorded a checksum of its own: read as before
        raise k.error(f"{meta} was changed after it was saved (it lacks the content checksum that format "
                      f"{doc['version']} always records); {fix}")
    if doc[CHECKSUM] != content_sha256(doc):
        raise k.error(f"{meta} was changed after it was saved (its content checksum does not match); {fix}")


def _check_consistent(model, doc: dict, arrays: dict, k: Kind, path: Path) -> None:
    """A JSON edited behind our back (another class count, a huge n_features) is refused here, in
    one line, before any computation: n_features must be a size the arrays actually have, and one
    all-zero row must give one finite answer per class (heads) or one finite score (detectors)."""
    E = k.error
    defaults = type(model)().get_params()
    for name, value in (doc.get("params") or {}).items():
        want = defaults.get(name)
        numeric = isinstance(want, (int, float)) and not isinstance(want, bool)
        if numeric and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise E(f"{path / k.meta} sets parameter {name} = {value!r}; a number is expected; re-run `{k.retrain}`")
    n = doc.get("n_features")
    sizes = {int(d) for v in arrays.values() for d in np.shape(v)}
    if not isinstance(n, int) or n < 1 or n not in sizes:
        raise E(f"{path / k.meta} says n_features = {n!r}, which none of its arrays has; the file was changed: "
                f"re-run `{k.retrain}`")
    x = np.zeros((1, n), dtype=np.float32)
    try:
        out = model.predict_proba(x) if k.noun == "head" else model.score_samples(x)
    except Exception as e:  # noqa: BLE001 - any failure here means the saved state does not fit together
        raise E(f"{path} does not fit together ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
                f"re-run `{k.retrain}`") from None
    want = (1, len(doc.get("classes") or [])) if k.noun == "head" else (1,)
    if np.shape(out) != want or not np.isfinite(out).all():
        raise E(f"{path} does not fit together: its arrays give an answer of shape {np.shape(out)} where "
                f"{meta_desc(k, doc)} expects {want}; re-run `{k.retrain}`")


def meta_desc(k: Kind, doc: dict) -> str:
    return f"{k.meta} ({len(doc.get('classes') or [])} classes)" if k.noun == "head" else k.meta


def save_head(out: str | Path, head, meta: dict, overwrite: bool = False, seen_keys: np.ndarray | None = None) -> Path:
    return save_model(out, head, meta, "head", overwrite, seen_keys)


def load_head(path: str | Path):
    """Load (head estimator, head.json dict); never executes code from the files."""
    return load_model(path, "head")
