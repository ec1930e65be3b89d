"""Anomaly detectors on cached vectors: scikit-learn outlier estimators whose fitted state is arrays."""

from __future__ import annotations

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
    from ..naming import lazy_class

    return lazy_class(_DETECTORS, __name__, name, DetectorError, "anomaly method")
