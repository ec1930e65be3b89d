"""`local-dir:<path>`: an encoder saved by `embed finetune` (weights.safetensors + encoder.json).

encoder.json names the parent encoder, whose architecture and preprocessing are reused; the
weights are read from safetensors only, so loading never unpickles anything."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..errors import EncoderError
from .base import Encoder
from .registry import create_encoder, register_family
from .weights import STRUCTURE_ONLY, load_into, load_state_dict_file, weights_sha256

CONFIG, WEIGHTS = "encoder.json", "weights.safetensors"


def read_config(path: Path) -> dict:
    from ..naming import read_tagged_json

    doc = read_tagged_json(path / CONFIG, "embedstore-encoder", EncoderError, "an embedstore encoder",
                           "pass a folder written by `embed finetune --out`")
    if "parent" not in doc:
        raise EncoderError(f"{path / CONFIG} names no parent encoder; re-run `embed finetune`")
    return doc


@register_family("local-dir", [], open_ended=True, available=lambda cfg: "local")
def create_local_dir(name: str, weights: str | None) -> Encoder:
    path = Path(name).expanduser()
    doc = read_config(path)
    if str(doc["parent"]).startswith("local-dir:"):
        raise EncoderError(f"{path / CONFIG}: a local-dir encoder's parent must be a registry encoder, not {doc['parent']}")
    wfile = Path(weights) if weights else path / WEIGHTS
    if wfile.suffix != ".safetensors" or not wfile.is_file():
        raise EncoderError(f"local-dir:{path} needs its weights as {WEIGHTS} (safetensors); {wfile} is missing or not safetensors")
    enc = create_encoder(doc["parent"], weights=STRUCTURE_ONLY, layer=doc.get("layer"))
    state_dict = load_state_dict_file(wfile, f"local-dir:{path}")
    adapt = getattr(enc, "adapt_state_dict", None)  # a family whose parameter names changed maps old files
    load_into(enc.model, adapt(state_dict) if adapt else state_dict, f"local-dir:{path}", str(wfile))
    # recorded as an absolute path: the set's provenance must name the same folder from any
    # working directory (a relative one only resolved where the build ran)
    enc.cfg = dataclasses.replace(enc.cfg, id=f"local-dir:{path.expanduser().resolve()}", source="local-dir",
                                  weights_desc=f"fine-tuned from {doc['parent']}")
    enc.weights_sha256 = weights_sha256(wfile)
    enc.weights_file = str(wfile)
    return enc
