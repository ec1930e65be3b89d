"""Every detector passes scikit-learn's estimator checks and agrees with a plain reference."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from embedstore.detectors.forest import IsolationForestDetector
from embedstore.detectors.gaussian import MahalanobisDetector, PCADetector
from embedstore.detectors.neighbours import KNNDetector, LOFDetector
from embedstore.detectors.ocsvm import OneClassSVMDetector

DETECTORS = [KNNDetector(), LOFDetector(), MahalanobisDetector(), PCADetector(), IsolationForestDetector(n_estimators=20),
             OneClassSVMDetector()]


@parametrize_with_checks(DETECTORS)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 8))
    out = rng.normal(size=(20, 8)) * 4 + 6
    return X, out


def test_isolation_forest_scores_equal_sklearn(blobs):
    from sklearn.ensemble import IsolationForest

    X, out = blobs
    ours = IsolationForestDetector(n_estimators=50, random_state=3).fit(X)
    ref = IsolationForest(n_estimators=50, random_state=3).fit(X)
    Q = np.vstack([X[:50], out])
    np.testing.assert_allclose(ours.score_samples(Q), ref.score_samples(Q), rtol=1e-6)


def test_lof_scores_equal_sklearn(blobs):
    from sklearn.neighbors import LocalOutlierFactor

    X, out = blobs
    ours = LOFDetector(k=10).fit(X)
    ref = LocalOutlierFactor(n_neighbors=10, novelty=True).fit(X)
    np.testing.assert_allclose(ours.score_samples(out), ref.score_samples(out), rtol=1e-4)
    np.testing.assert_allclose(ours.fit_scores_, ref.negative_outlier_factor_, rtol=1e-4)


def test_ocsvm_scores_equal_sklearn(blobs):
    from sklearn.svm import OneClassSVM

    X, out = blobs
    ours = OneClassSVMDetector(nu=0.1).fit(X)
    ref = OneClassSVM(nu=0.1).fit(X)
    np.testing.assert_allclose(ours.score_samples(out), ref.score_samples(out), rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("det", [KNNDetector(), LOFDetector(), MahalanobisDetector(), PCADetector(variance=0.5),
                                 IsolationForestDetector(), OneClassSVMDetector()], ids=lambda d: d.kind)
def test_planted_outliers_rank_first(blobs, det):
    X, out = blobs
    det.fit(X)
    s = det.score_samples(np.vstack([X, out]))
    worst = np.argsort(s)[:20]
    assert (worst >= len(X)).mean() >= 0.9
    assert (det.percentile(det.score_samples(out)) > 90).all()


def test_knn_fit_set_never_its_own_neighbour():
    X = np.array([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0]])
    det = KNNDetector(k=1).fit(X)
    np.testing.assert_allclose(-det.fit_scores_, [1.0, 1.0, 9.0])
    np.testing.assert_allclose(-det.score_samples(X), [0.0, 0.0, 0.0])  # as new items they match themselves
