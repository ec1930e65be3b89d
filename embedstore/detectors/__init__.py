"""Anomaly detectors on cached vectors: scikit-learn outlier estimators whose fitted state is arrays."""

from __future__ import annotations

from importlib import import_module

_DETECTORS = {
    "knn": ("neighbours", "KNNDetector"),
    "lof": ("neighbours", "LOFDetector"),
    "mahalanobis": ("gaussian", "MahalanobisDetector"),
    "pca": ("gaussian", "PCADetector"),
    "iforest": ("forest", "IsolationForestDetector"),
    "ocsvm": ("ocsvm", "OneClassSVMDetector"),
}
DETECTOR_NAMES = tuple(_DETECTORS)


def detector_class(name: str):
    """The estimator class for a method name (knn, lof, mahalanobis, pca, iforest, ocsvm)."""
    from ..errors import DetectorError

    if name not in _DETECTORS:
        import difflib

        close = difflib.get_close_matches(name, DETECTOR_NAMES, n=2)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise DetectorError(f"unknown anomaly method '{name}'{hint} Methods: {', '.join(DETECTOR_NAMES)}")
    mod, cls = _DETECTORS[name]
    return getattr(import_module(f".{mod}", __name__), cls)
