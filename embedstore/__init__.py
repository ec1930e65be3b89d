"""embedstore: embed a dataset once with a frozen pretrained encoder into an HDF5 + FAISS store.

Heavy libraries (torch, h5py, faiss) load only when a function that needs them is called.
"""

from __future__ import annotations

import types

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
    # subpackages that are also the function of their name (CallablePackage): `embedstore.search(...)`
    "search": ("embedstore.search", None),
    "recommend": ("embedstore.recommend", None),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        found = importlib.import_module(module)
        return found if attr is None else getattr(found, attr)
    raise AttributeError(f"module 'embedstore' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)  # the public names, not this module's helpers (types, CallablePackage)


class CallablePackage(types.ModuleType):
    """A subpackage that is also the function of its name: `embedstore.search(store, ...)` calls
    `embedstore.search.query.search`, and `import embedstore.search.index` still works. Python binds
    an imported subpackage to its parent's attribute of that name, so a function `embedstore.search`
    would become the package the first time anything imported `embedstore.search.*`. The package
    names its function in `_call_target()`; `__wrapped__` (the function) gives `inspect.signature`
    and `help` the function's signature."""

    def __call__(self, *args, **kwargs):
        return self._call_target()(*args, **kwargs)

    def __getattr__(self, name: str):
        if name == "__wrapped__":
            return self._call_target()
        raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
