"""The store: an HDF5 catalog plus shards and FAISS indexes in `<store>.d/`."""

from .schema import SCHEMA_VERSION, sidecar_dir
from .shards import ItemRows
from .store import Store, VectorSet, open_store

__all__ = ["Store", "VectorSet", "ItemRows", "open_store", "sidecar_dir", "SCHEMA_VERSION"]
