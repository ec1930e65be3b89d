"""Which parts of an encoder are its blocks, input to output, so `--unfreeze N` can thaw the last N.

Known architectures list their block modules; anything else falls back to its top-level children
that hold parameters. Parameters after the last block (final norm, projection, head conv) thaw
with the blocks; parameters before the first block (the stem) thaw only when every block does."""

from __future__ import annotations

import re

# (pattern on parameter names) -> the block key is the matched prefix
_PATTERNS = [
    r"^(_blocks\.\d+)\.",                      # EfficientNet-Lite
    r"^(layer\d)\.",                           # torchvision ResNet, open_clip RN
    r"^(features\.\d+)\.",                     # torchvision EfficientNet / ConvNeXt
    r"^(encoder\.layers\.encoder_layer_\d+)\.",  # torchvision ViT
    r"^(transformer\.resblocks\.\d+)\.",       # open_clip ViT image tower
    r"^(blocks\.\d+\.\d+)\.",                  # timm EfficientNet / MobileNet (stage.block)
    r"^(blocks\.\d+)\.",                       # timm ViT, EVA, DINOv2
    r"^(stages\.\d+)\.",                       # timm ConvNeXt, RegNet-style stages
    r"^(0\.(?:auto_)?model\.encoder\.layer\.\d+)\.",  # sentence-transformers BERT-style text models
    r"^(\d+)\.",                               # plain nn.Sequential (test:tiny)
]


_NOT_BLOCKS = re.compile(r"^0\.(?:auto_)?model\.(?!encoder\.layer\.)")  # a text model's embeddings and pooler


def block_of(name: str) -> str | None:
    if _NOT_BLOCKS.match(name):
        return None
    for pat in _PATTERNS:
        m = re.match(pat, name)
        if m:
            return m.group(1)
    return None


def blocks(model) -> list[str]:
    """Block keys in forward order (order of first appearance among parameters)."""
    out: list[str] = []
    for name, _ in model.named_parameters():
        b = block_of(name)
        if b is not None and b not in out:
            out.append(b)
    if len(out) < 2:  # unknown layout: top-level children with parameters
        out = []
        for name, _ in model.named_parameters():
            top = name.split(".", 1)[0]
            if top not in out:
                out.append(top)
    return out


def trainable_names(model, unfreeze: int) -> set[str]:
    """Names of the parameters that train when the last `unfreeze` blocks are thawed."""
    from ..errors import EncoderError

    keys = blocks(model)
    if unfreeze < 0 or unfreeze > len(keys):
        raise EncoderError(f"--unfreeze {unfreeze}: this encoder has {len(keys)} blocks ({keys[0]} .. {keys[-1]}); "
                           f"choose 0 to {len(keys)}")
    if unfreeze == 0:
        return set()
    thaw = set(keys[-unfreeze:])
    names = [n for n, _ in model.named_parameters()]
    key_of = {n: (block_of(n) or n.split(".", 1)[0]) for n in names}
    last_block_pos = max(i for i, n in enumerate(names) if key_of[n] in keys)
    out = set()
    for i, n in enumerate(names):
        if key_of[n] in thaw or i > last_block_pos or unfreeze == len(keys):
            out.add(n)
    return out
