"""`embed build --engine ray` keeps a vector set's recorded build precision, like the local build
(tests/test_query_precision.py): extending an fp32 set with `--precision auto` on a bf16 CPU stays fp32."""

from __future__ import annotations

import logging

import pytest

from conftest import make_image_folder

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_cluster():
    import os

    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    yield ray
    ray.shutdown()


def test_ray_extends_a_set_at_its_recorded_precision(ray_cluster, tmp_path, monkeypatch):
    from embedstore.embedding import device
    from embedstore.ingest import build
    from embedstore.store import open_store

    monkeypatch.delenv("EMBEDSTORE_CPU_BF16", raising=False)
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)  # "auto" would pick bf16 here
    src = make_image_folder(tmp_path / "photos", per_class=3)
    kw = dict(encoder="test:tiny", progress=False, batch_size=4, shard_rows=4)
    build(src, tmp_path / "s.h5", precision="fp32", workers=0, **kw)
    make_image_folder(tmp_path / "photos", classes=("owl",), per_class=2, seed=2)
    r = build(src, tmp_path / "s.h5", engine="ray", **kw)
    assert r.encoded == 2 and r.precision == "fp32" and "built at fp32" in r.precision_reason
    with open_store(tmp_path / "s.h5") as st:
        assert st.select_set().attrs["build_precision"] == "fp32"
    build(src, tmp_path / "fresh.h5", engine="ray", **kw)  # auto is resolved on each actor: the driver cannot record it
    with open_store(tmp_path / "fresh.h5") as st:
        assert "build_precision" not in st.select_set().attrs
