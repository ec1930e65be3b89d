"""Loading weight files safely (no unpickling of code) and failing fast when offline."""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from ..errors import EncoderError


@functools.lru_cache(maxsize=32)
def host_reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether the host of `url` accepts a TCP connection within `timeout` seconds."""
    if os.environ.get("HF_HUB_OFFLINE") == "1" and "huggingface" in url:
        return False
    parsed = urlparse(url)
    host, port = parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)
    if not host:
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


STRUCTURE_ONLY = "<structure-only>"  # `weights=` value: build the architecture, load nothing (local-dir fills it)


def load_state_dict_file(path: str | os.PathLike, encoder_id: str) -> dict:
    """Read a state dict from .safetensors or a .pt/.pth checkpoint (tensors only, never code)."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise EncoderError(f"--weights {p} does not exist; pass the path of a .safetensors or .pth file")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(p))
        else:
            sd = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any parse failure is the same user error
        raise EncoderError(f"cannot read weights {p} for {encoder_id}: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from e
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not sd:
        raise EncoderError(f"{p} holds no state dict of tensors; expected a .safetensors or .pth file of {encoder_id} weights")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def load_into(model, state_dict: dict, encoder_id: str, source: str, ignore_prefixes: tuple[str, ...] = ()) -> None:
    """Load weights strictly, except for classifier keys the encoder does not use."""
    state_dict = {k: v for k, v in state_dict.items() if not k.startswith(ignore_prefixes)}
    model_keys = {k for k in model.state_dict() if not k.startswith(ignore_prefixes)}
    missing = sorted(model_keys - state_dict.keys())
    unexpected = sorted(state_dict.keys() - model_keys)
    if missing or unexpected:
        raise EncoderError(
            f"weights {source} do not fit {encoder_id}: {len(missing)} missing keys (e.g. {missing[:2]}), "
            f"{len(unexpected)} unexpected keys (e.g. {unexpected[:2]}); pass weights saved from the same architecture"
        )
    try:
        model.load_state_dict(state_dict, strict=False)
    except RuntimeError as e:
        raise EncoderError(f"weights {source} do not fit {encoder_id}: {str(e).splitlines()[-1].strip()[:200]}") from e


def weights_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a weights file, cached by (real path, size, mtime) so that a large checkpoint is
    hashed once, not on every build, query or server start. The cache is a JSON file under
    $EMBEDSTORE_CACHE_DIR (default ~/.cache/embedstore); a file changed in place gets a new size or
    mtime and is hashed again. Integrity checks of what embedstore itself wrote (shards, indexes,
    heads) never use this cache."""
    from ..atomic import file_sha256

    p = Path(path).resolve()
    return cached_hash(p, "", lambda: file_sha256(p))


def cached_hash(path: str | os.PathLike, what: str, compute) -> str:
    """A hash derived from the file at `path` (`what` names which: "" for the file's own sha256, e.g.
    "open_clip 3.3.0 ViT-B-32/openai visual state dict" for the weights a model loaded from it),
    computed by `compute()` once per (real path, size, mtime, what) and kept in the cache file
    `weights_sha256` uses. A file changed in place is hashed again; an unwritable cache only costs
    the hashing."""
    import json

    from ..atomic import write_json_atomic

    p = Path(path).resolve()
    st = p.stat()
    tail = f"|{what}" if what else ""
    key = f"{p}|{st.st_size}|{st.st_mtime_ns}{tail}"
    cache = Path(os.environ.get("EMBEDSTORE_CACHE_DIR") or Path.home() / ".cache" / "embedstore") / "weights-sha256.json"
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if isinstance(known, dict) and isinstance(known.get(key), str):
        return known[key]
    sha = compute()
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        known = {k: v for k, v in (known if isinstance(known, dict) else {}).items() if not _same_entry(k, str(p), what)}
        known[key] = sha
        write_json_atomic(cache, known)
    except OSError:  # a read-only home: hash every time, as before
        pass
    return sha


def _same_entry(key: str, path: str, what: str) -> bool:
    """Whether a cache key is for this path and this kind of hash (an older size or mtime of it)."""
    if not key.startswith(f"{path}|"):
        return False
    rest = key[len(path) + 1:].split("|", 2)  # size, mtime[, what]
    return len(rest) >= 2 and (rest[2] if len(rest) == 3 else "") == what
