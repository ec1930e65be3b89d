"""embedstore: embed a dataset once with a frozen pretrained encoder into an HDF5 + FAISS store.

Heavy libraries (torch, h5py, faiss) load only when a function that needs them is called.
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "build": ("embedstore.ingest", "build"),
    "BuildReport": ("embedstore.ingest", "BuildReport"),
    "open_store": ("embedstore.store", "open_store"),
    "Store": ("embedstore.store", "Store"),
    "create_encoder": ("embedstore.encoders", "create_encoder"),
    "list_encoders": ("embedstore.encoders", "list_encoders"),
    "EncoderConfig": ("embedstore.encoders", "EncoderConfig"),
    "open_source": ("embedstore.sources", "open_source"),
    "fit_head": ("embedstore.heads.fit", "fit_head"),
    "predict": ("embedstore.heads.apply", "predict"),
    "evaluate": ("embedstore.heads.apply", "evaluate"),
    "load_head": ("embedstore.modelfile", "load_head"),
    "run_audit": ("embedstore.audit", "run_audit"),
    "find_anomalies": ("embedstore.detectors.anomalies", "find_anomalies"),
    "search": ("embedstore.search.query", "search"),
    "recommend": ("embedstore.recommend.query", "recommend"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'embedstore' has no attribute {name!r}")
