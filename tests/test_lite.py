"""effnet-lite:lite0 runs on timm's tf_efficientnet_lite0: same vectors, same vector-set name, and
old layer names and fine-tuned weight files still load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

GOLDEN = Path(__file__).parent / "data" / "effnet_lite0_digits.npz"  # made by the hand-written module it replaced


@pytest.mark.slow
def test_vectors_and_set_name_equal_those_of_the_module_it_replaced(tmp_path):
    from embedstore.datasets import write_digits
    from embedstore.ingest import build
    from embedstore.store import open_store

    golden = np.load(GOLDEN)
    build(write_digits(tmp_path / "digits", per_class=2), tmp_path / "s.h5", encoder="effnet-lite:lite0",
          workers=0, precision="fp32", progress=False)
    with open_store(tmp_path / "s.h5") as st:
        vs = st.select_set()
        rows = st.rows(vs.name)
        X, ids = rows.load(), [str(i) for i in rows.ids]
    assert vs.name == str(golden["set_name"])  # existing stores keep their set names
    assert vs.provenance["weights_sha256"] == "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
    old = dict(zip([str(i) for i in golden["ids"]], golden["vectors"].astype(np.float32)))
    ref = np.stack([old[i] for i in ids])
    cos = (X * ref).sum(1) / np.linalg.norm(X, axis=1) / np.linalg.norm(ref, axis=1)
    assert len(ids) == 20 and cos.min() >= 0.9999


def test_old_layer_names_and_fine_tuned_weights_still_load(tmp_path):
    from safetensors.torch import save_file

    from embedstore.encoders import create_encoder
    from embedstore.encoders.lite import timm_name

    assert timm_name("_blocks.5._depthwise_conv.weight") == "blocks.3.0.conv_dw.weight"
    assert timm_name("_blocks.0._project_conv.weight") == "blocks.0.0.conv_pw.weight"
    assert timm_name("model._bn1.bias") == "model.bn2.bias" and timm_name("blocks.1.0.bn1.bias") == "blocks.1.0.bn1.bias"
    old = create_encoder("effnet-lite:lite0", layer="_blocks.10")
    new = create_encoder("effnet-lite:lite0", layer="blocks.4.2")
    x = torch.randn(1, 3, 224, 224)
    assert old.cfg.layer == "_blocks.10" and torch.equal(old(x), new(x)) and old.cfg.dim == 112
    # a fine-tuned encoder saved before the switch (old key names, with the classifier) loads into timm's layout
    enc = create_encoder("effnet-lite:lite0")
    inverse = {timm_name(k): k for k in _old_keys()}
    with torch.no_grad():
        for p in enc.model.parameters():
            p.mul_(1.01)
    sd = {inverse[k]: v.contiguous() for k, v in enc.model.state_dict().items()}
    sd["_fc.weight"], sd["_fc.bias"] = torch.zeros(1000, 1280), torch.zeros(1000)
    folder = tmp_path / "ft"
    folder.mkdir()
    save_file(sd, folder / "weights.safetensors")
    (folder / "encoder.json").write_text('{"format": "embedstore-encoder", "version": 1, "parent": "effnet-lite:lite0"}')
    loaded = create_encoder(f"local-dir:{folder}")
    assert torch.allclose(loaded(x), enc(x))


def _old_keys() -> list[str]:
    from embedstore.encoders.lite import bundled_weights_path

    return [k for k in torch.load(bundled_weights_path(), weights_only=True) if not k.startswith("_fc.")]
