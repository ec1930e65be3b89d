"""Classifier heads on cached vectors: scikit-learn estimators whose fitted state is plain arrays."""

from __future__ import annotations

from importlib import import_module

# head name -> (module, class); modules load only when a head is used
_HEADS = {
    "logistic": ("logistic", "LogisticHead"),
    "linear-svm": ("linear", "LinearSVMHead"),
    "ridge": ("linear", "RidgeHead"),
    "knn": ("knn", "KNNHead"),
    "mlp": ("mlp", "MLPHead"),
}
HEAD_NAMES = tuple(_HEADS)


def head_class(name: str):
    """The estimator class for a head name (`logistic`, `linear-svm`, `ridge`, `knn`, `mlp`)."""
    from ..errors import HeadError

    if name not in _HEADS:
        import difflib

        close = difflib.get_close_matches(name, HEAD_NAMES, n=2)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise HeadError(f"unknown head '{name}'{hint} Heads: {', '.join(HEAD_NAMES)}")
    mod, cls = _HEADS[name]
    return getattr(import_module(f".{mod}", __name__), cls)
