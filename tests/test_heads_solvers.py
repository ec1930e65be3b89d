"""Issue 15 part 5: which solver a head uses, that the torch solver reaches scikit-learn's objective,
honest convergence flags, and probabilities calibrated on held-out rows only."""

from __future__ import annotations

import numpy as np
import pytest

from embedstore.heads.data import TRAIN, VAL, SplitData
from embedstore.heads.fit import _convergence_notes, _path_notes, refit, sweep
from embedstore.heads.linear import LinearSVMHead, RidgeHead
from embedstore.heads.logistic import LogisticHead, choose_solver


def blobs(n=600, d=20, k=3, sep=1.5, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    X = rng.normal(size=(n, d)) + sep * rng.normal(size=(k, d))[y]
    return X.astype(np.float32), np.array([f"c{v}" for v in y])


class ArrayRows:
    """A vector set in memory shaped like the store's SetRows, so the real sweep code runs."""

    def __init__(self, X, labels):
        self.X, self.labels = X, labels
        self.ids = np.array([f"item{i:05d}" for i in range(len(X))])
        self.splits = np.array([""] * len(X))
        self.set_name, self.dim = "test", X.shape[1]

    def __len__(self):
        return len(self.X)

    def load(self, mask=None):
        return self.X if mask is None else self.X[mask]

    def chunks(self, mask, rows=64):
        idx = np.flatnonzero(mask)
        for s in range(0, len(idx), rows):
            sel = idx[s:s + rows]
            yield sel, self.X[sel]


def objective(X, y_idx, W, b, C):
    """scikit-learn's L2 logistic objective per row: mean log loss + ||W||^2 / (2 C n)."""
    X = X.astype(np.float64)
    Z = X @ W.T.astype(np.float64) + b.astype(np.float64)
    if Z.shape[1] == 1:
        z = Z[:, 0]
        loss = np.logaddexp(0, z) - y_idx * z
    else:
        loss = np.logaddexp.reduce(Z, axis=1) - Z[np.arange(len(y_idx)), y_idx]
    return loss.mean() + (W.astype(np.float64) ** 2).sum() / (2 * C * len(X))


@pytest.mark.parametrize("k", [2, 4])
@pytest.mark.parametrize("C", [0.1, 10.0])
def test_torch_solver_reaches_sklearn_objective(k, C):
    from sklearn.linear_model import LogisticRegression

    X, y = blobs(n=500, d=16, k=k, sep=0.8, seed=k)
    y_idx = np.unique(y, return_inverse=True)[1]
    sk = LogisticRegression(C=C, tol=1e-10, max_iter=10_000).fit(X.astype(np.float64), y_idx)
    ours = LogisticHead(C=C, tol=1e-7, max_iter=2000, solver="torch").fit(X, y)
    assert ours.fit_path_.startswith("torch L-BFGS")
    f_sk = objective(X, y_idx, sk.coef_, sk.intercept_, C)
    f_ours = objective(X, y_idx, ours.coef_, ours.intercept_, C)
    assert abs(f_ours - f_sk) / f_sk <= 1e-4, (f_ours, f_sk)


def test_solver_choice_by_size_device_and_memory():
    assert choose_solver("auto", 300, 1280, "cpu", True)[0] == "sklearn"
    assert choose_solver("auto", 50_000, 512, "cpu", True)[0] == "torch"
    assert choose_solver("auto", 300, 1280, "cuda", True)[0] == "torch"
    which, why = choose_solver("auto", 300, 1280, "cpu", False)
    assert which == "torch" and "streaming" in why
    with pytest.raises(ValueError, match="in memory"):
        choose_solver("sklearn", 300, 1280, "cpu", False)
    X, y = blobs()
    assert LogisticHead().fit(X, y).fit_path_.startswith("scikit-learn lbfgs in memory")


def test_fit_head_path_and_streaming_path_are_stated():
    X, y = blobs(n=400)
    for budget, expect in ((1 << 30, "scikit-learn lbfgs in memory"), (1000, "torch L-BFGS, streaming")):
        data = SplitData(ArrayRows(X, y), 0.2, 0.2, 0, None, budget)
        curve, (_, c, snap) = sweep(LogisticHead, data, [0.1, 1.0], {}, "cpu", progress=False)
        final = refit(LogisticHead, data, c, snap, {}, "cpu")
        notes = _path_notes(final, "train + val")
        assert any(n.startswith("solver: " + expect) for n in notes), notes


def test_convergence_is_honest_about_max_iter_and_zero_iterations():
    X, y = blobs(n=400, sep=3.0)  # separable: large C needs many iterations
    data = SplitData(ArrayRows(X, y), 0.2, 0.2, 0, None, 1 << 30)
    curve, _ = sweep(LogisticHead, data, [1e4], {"max_iter": 3}, "cpu", progress=False)
    assert curve[0]["n_iter"] == 3 and not curve[0]["converged"] and "max_iter" in curve[0]["why"]
    assert "iteration limit" in _convergence_notes(LogisticHead, curve)[0]
    # a point whose warm start already meets the tolerance did zero iterations: not converged, said so
    zero = [{"value": 1e4, "converged": False, "n_iter": 0, "why": "zero iterations"}]
    assert "zero iterations" in _convergence_notes(LogisticHead, zero)[0]
    torch_curve, _ = sweep(LogisticHead, data, [1e2, 1e3, 1e4], {"solver": "torch", "tol": 1e-1}, "cpu", progress=False)
    for point in torch_curve:
        assert point["converged"] == (0 < point["n_iter"] < 1000), point
    assert any(p["n_iter"] == 0 and not p["converged"] for p in torch_curve)  # the loose tol makes later points start converged


def test_never_zero_iterations_hidden():
    X, y = blobs()
    head = LogisticHead(solver="torch", warm_start=True, tol=1e-3).fit(X, y)
    assert head.n_iter_ > 0
    head.fit(X, y)  # the same problem from its own solution
    assert head.n_iter_ == 0


@pytest.mark.parametrize("cls", [LinearSVMHead, RidgeHead])
def test_linear_heads_calibrate_on_validation_not_training_rows(cls):
    X, y = blobs(n=400, d=80, sep=0.15, seed=3)  # noisy, many dims: training margins are over-confident
    data = SplitData(ArrayRows(X, y), 0.25, 0.15, 0, None, 1 << 30)
    curve, (_, v, snap) = sweep(cls, data, [1e-2 if cls is RidgeHead else 1.0], {}, "cpu", progress=False)
    final = refit(cls, data, v, snap, {}, "cpu")
    assert "validation split" in final.calibrated_on_
    # the temperature is the one that fits the validation scores of the train-only model ...
    from embedstore.heads.base import fit_temperature

    train_only = cls(**{cls.sweep_param: v, "calibration": "given"}).fit(*data.arrays(TRAIN))
    Xv, yv = data.arrays(VAL)
    yv_idx = np.searchsorted(train_only.classes_, yv)
    assert float(final.temperature_) == pytest.approx(fit_temperature(train_only._scores(Xv), yv_idx), rel=1e-6)
    # ... and not the one the training rows' own (over-confident) scores would give
    Xt, yt = data.arrays(TRAIN)
    on_train = fit_temperature(train_only._scores(Xt), np.searchsorted(train_only.classes_, yt))
    assert 0.01 < on_train < float(final.temperature_) / 1.5  # held-out rows call for a softer softmax


@pytest.mark.parametrize("cls", [LinearSVMHead, RidgeHead])
def test_plain_fit_calibrates_out_of_fold(cls):
    X, y = blobs(n=300, d=40, sep=0.6, seed=4)
    head = cls().fit(X, y)
    assert head.calibrated_on_.startswith("out-of-fold")
    from embedstore.heads.base import fit_temperature

    on_train = fit_temperature(head._scores(X), np.searchsorted(head.classes_, y))
    assert float(head.temperature_) != pytest.approx(on_train, rel=1e-3)
    given = cls(calibration="given").fit(X, y)
    assert float(given.temperature_) == 1.0 and "nothing yet" in given.calibrated_on_


def test_old_saved_linear_head_still_loads(tmp_path):
    """A head saved before calibration was recorded (no `calibrated_on`, no `calibration` param) loads and says so."""
    X, y = blobs()
    head = RidgeHead().fit(X, y)
    doc = {"params": {"alpha": 1.0}, **{k: v for k, v in head.state_fields().items() if k != "calibrated_on"}}
    old = RidgeHead.from_state(doc, head.state_arrays())
    assert "older embedstore" in old.calibrated_on_
    np.testing.assert_allclose(old.predict_proba(X), head.predict_proba(X))
    doc = {"params": {"C": 1.0, "tol": 1e-4, "max_iter": 1000, "warm_start": False, "precision": "fp32", "device": "cpu"},
           "classes": ["c0", "c1", "c2"], "n_features": 20}
    old_log = LogisticHead.from_state(doc, {"coef_": np.zeros((3, 20), np.float32), "intercept_": np.zeros(3, np.float32)})
    assert old_log.predict(X).shape == (len(X),)


@pytest.mark.parametrize("k", [2, 3])
def test_prior_penalty_reaches_the_pull_toward_prior_optimum(k):
    """With a prior (W0, b0) the torch solver minimises mean log loss + (||W - W0||^2 + ||b - b0||^2) / (2 C n):
    checked against scipy's L-BFGS-B on that objective written out by hand, binomial and multinomial."""
    from scipy.optimize import minimize
    from scipy.special import log_softmax

    X, labels = blobs(n=120, d=6, k=k, sep=1.0, seed=3)
    classes, y = np.unique(labels, return_inverse=True)
    n, d = X.shape
    n_out = 1 if k == 2 else k
    rng = np.random.default_rng(1)
    W0, b0 = rng.normal(size=(n_out, d)).astype(np.float32), rng.normal(size=n_out).astype(np.float32)
    C = 0.05
    Xd = X.astype(np.float64)

    def objective(theta):
        W, b = theta[: n_out * d].reshape(n_out, d), theta[n_out * d:]
        z = Xd @ W.T + b
        if n_out == 1:
            z = np.column_stack([np.zeros(n), z[:, 0]])
        loss = -log_softmax(z, axis=1)[np.arange(n), y].mean()
        return loss + (((W - W0) ** 2).sum() + ((b - b0) ** 2).sum()) / (2 * C * n)

    ref = minimize(objective, np.zeros(n_out * (d + 1)), method="L-BFGS-B", options={"gtol": 1e-10, "ftol": 1e-14}).x
    head = LogisticHead(C=C, solver="auto", tol=1e-6).fit_chunks(lambda: [(X, y)], classes, d, in_memory=True,
                                                                prior=(W0, b0))
    assert "toward the given prior" in head.fit_path_  # auto went to torch: scikit-learn has no such term
    got = np.concatenate([head.coef_.ravel(), head.intercept_])
    assert objective(got) <= objective(ref) + 1e-6  # as low as the reference, to its precision
    np.testing.assert_allclose(got, ref, atol=2e-3)
    plain = LogisticHead(C=C, solver="torch", tol=1e-6).fit_chunks(lambda: [(X, y)], classes, d, in_memory=True)
    assert np.abs(np.concatenate([plain.coef_.ravel(), plain.intercept_]) - ref).max() > 0.1  # the prior matters here
    with pytest.raises(ValueError, match="needs solver='torch'"):
        LogisticHead(solver="sklearn").fit_chunks(lambda: [(X, y)], classes, d, in_memory=True, prior=(W0, b0))
    with pytest.raises(ValueError, match="prior has shapes"):
        LogisticHead().fit_chunks(lambda: [(X, y)], classes, d, in_memory=True, prior=(W0[:, :3], b0))


def test_convergence_notes_read_the_reason_of_cross_validated_points():
    """A cross-validated point has one n_iter per fold: the note follows its recorded reason."""
    cv = [{"value": 1e-4, "converged": False, "n_iter": [1, 0, 1], "why": "zero iterations: the warm start ..."},
          {"value": 1e4, "converged": False, "n_iter": [9, 1000, 9], "why": "hit max_iter (1000)"}]
    notes = _convergence_notes(LogisticHead, cv)
    assert len(notes) == 2 and "iteration limit at C = 10000" in notes[0] and "zero iterations at C = 0.0001" in notes[1]
