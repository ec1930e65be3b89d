"""Nearest-neighbour search over a vector set: FAISS index or exact scan, with row filters."""
