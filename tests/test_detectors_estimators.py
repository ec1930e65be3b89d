"""Every detector passes scikit-learn's estimator checks and agrees with a plain reference."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from embedstore.detectors.base import cross_fit_folds
from embedstore.detectors.forest import IsolationForestDetector
from embedstore.detectors.gaussian import MahalanobisDetector, PCADetector
from embedstore.detectors.neighbours import KNNDetector, LOFDetector
from embedstore.detectors.ocsvm import OneClassSVMDetector

# five trees: the checks test the estimator's contract, not its ranking (tests below do), and every
# fit cross-fits up to 20 folds (base.Detector._held_out_scores), 0.75 s a fit at 20 trees, 0.19 s at 5
DETECTORS = [KNNDetector(), LOFDetector(), MahalanobisDetector(), PCADetector(), IsolationForestDetector(n_estimators=5),
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
    folds = cross_fit_folds(len(X))  # each fit item's own score: from sklearn's LOF fitted on the other folds
    for f in range(folds.max() + 1):
        hold = folds == f
        fold_ref = LocalOutlierFactor(n_neighbors=10, novelty=True).fit(X[~hold])
        np.testing.assert_allclose(ours.fit_scores_[hold], fold_ref.score_samples(X[hold]), rtol=1e-4)


def test_ocsvm_scores_equal_sklearn(blobs):
    from sklearn.svm import OneClassSVM

    X, out = blobs
    ours = OneClassSVMDetector(nu=0.1).fit(X)
    ref = OneClassSVM(nu=0.1).fit(X)
    want = ref.score_samples(out) / ref.dual_coef_.sum()  # ours is normalised by the coefficients' sum (nu * n)
    np.testing.assert_allclose(ours.score_samples(out), want, rtol=1e-5, atol=1e-12)


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


def normal_items(n: int, seed: int, d: int = 64) -> np.ndarray:
    """Items of one seeded Gaussian with a decaying spectrum (like embeddings): the same
    distribution for every call with the same `d`, new draws for each `seed`."""
    Q, _ = np.linalg.qr(np.random.default_rng(12345).normal(size=(d, d)))
    return ((np.random.default_rng(seed).normal(size=(n, d)) / np.sqrt(np.arange(1, d + 1))) @ Q.T).astype(np.float32)


@pytest.mark.parametrize("det", [KNNDetector(), LOFDetector(), MahalanobisDetector(), PCADetector(),
                                 IsolationForestDetector(), OneClassSVMDetector()], ids=lambda d: d.kind)
def test_contamination_is_the_share_of_new_normal_items_flagged(det):
    """Fit on 1,000 normal items, score 2,000 new ones from the same distribution: about 5% flagged.

    Bounds [0.02, 0.10]: the threshold is the 5% quantile of 1,000 held-out scores (the rate it implies
    has sd ~0.007) and 2,000 new items add sd ~0.005, so ~3 sd either side, with room above for fold
    models that see 95% of the items. Thresholds set on in-sample scores (before cross-fitting) flag
    12.2% (Mahalanobis), 16.6% (PCA) and 12.3% (one-class SVM) of these new items."""
    det.set_params(contamination=0.05).fit(normal_items(1000, seed=0))
    flagged = (det.predict(normal_items(2000, seed=1)) == -1).mean()
    assert 0.02 <= flagged <= 0.10, (det.kind, flagged)
    assert (det.fit_scores_ < det.offset_).mean() == pytest.approx(0.05, abs=0.002)  # fit items: their held-out scores
    assert det.threshold_description().startswith("5% of ")


def test_saved_calibration_round_trips(tmp_path):
    from embedstore.modelfile import load_model, save_model

    det = MahalanobisDetector().fit(normal_items(200, seed=2, d=8))
    save_model(tmp_path / "m", det, {}, "detector")
    back, doc = load_model(tmp_path / "m", "detector")
    assert doc["calibration"] == {"method": "cross-fit", "folds": 20, "items": 200}
    assert back.threshold_description() == "5% of out-of-fold scores of 200 normal items (20-fold cross-fitting)"
    Q = normal_items(50, seed=3, d=8)
    np.testing.assert_allclose(back.decision_function(Q), det.decision_function(Q))


@pytest.mark.parametrize("m,d", [(30, 64), (200, 16), (64, 64)])
def test_mahalanobis_equals_sklearn_ledoit_wolf_without_a_d_by_d_inverse(m, d):
    """Fewer items than dimensions (Woodbury path), more (Cholesky path) and equal: the same distances
    and precision as scikit-learn's LedoitWolf, and the cross-fit scores equal a LedoitWolf refit per fold."""
    from sklearn.covariance import LedoitWolf

    rng = np.random.default_rng(m + d)
    X = rng.normal(size=(m, d)) @ rng.normal(size=(d, d)) * 0.3 + 1.0
    Q = rng.normal(size=(15, d)) * 2
    ref = LedoitWolf().fit(X)
    det = MahalanobisDetector().fit(X)
    np.testing.assert_allclose(-det._score(Q), ref.mahalanobis(Q), rtol=1e-7)
    np.testing.assert_allclose(det.precision_, ref.precision_, rtol=1e-6, atol=1e-7 * np.abs(ref.precision_).max())
    held, how = det._held_out_scores(X)
    folds = cross_fit_folds(m)
    for f in range(how["folds"]):
        hold = folds == f
        np.testing.assert_allclose(-held[hold], LedoitWolf().fit(X[~hold]).mahalanobis(X[hold]), rtol=1e-7)


def test_mahalanobis_on_constant_data_falls_back_to_sklearn_pseudo_inverse():
    from sklearn.covariance import LedoitWolf

    X = np.ones((20, 5))
    det = MahalanobisDetector().fit(X)
    Q = np.arange(10.0).reshape(2, 5)
    np.testing.assert_allclose(-det._score(Q), LedoitWolf().fit(X).mahalanobis(Q))
