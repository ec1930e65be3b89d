"""Classifier heads on cached vectors: scikit-learn estimators whose fitted state is plain arrays."""

from __future__ import annotations

# head name -> (module, class); modules load only when a head is used
_HEADS = {
    "logistic": ("logistic", "LogisticHead"),
    "linear-svm": ("linear", "LinearSVMHead"),
    "ridge": ("linear", "RidgeHead"),
    "knn": ("knn", "KNNHead"),
    "mlp": ("mlp", "MLPHead"),
    "zero-shot": ("zero_shot", "ZeroShotHead"),  # no training: CLIP text prompts (fit_zero_shot)
}
HEAD_NAMES = tuple(_HEADS)


def head_class(name: str):
    """The estimator class for a head name (`logistic`, `linear-svm`, `ridge`, `knn`, `mlp`, `zero-shot`)."""
    from ..errors import HeadError
    from ..naming import lazy_class

    return lazy_class(_HEADS, __name__, name, HeadError, "head")
