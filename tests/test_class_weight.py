"""--class-weight balanced: imbalanced labels weighted as scikit-learn weights them, on both logistic
solvers and the linear SVM; heads without class weights refuse it in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import embed, make_image_folder


def _imbalanced(n_major=270, n_minor=30, dim=16, classes=2, seed=0):
    rng = np.random.default_rng(seed)
    sizes = [n_major] + [n_minor] * (classes - 1)
    X = np.concatenate([rng.normal(0.6 * k, 1.0, (m, dim)) for k, m in enumerate(sizes)]).astype(np.float32)
    y = np.concatenate([[f"c{k}"] * m for k, m in enumerate(sizes)])
    return X, y


@pytest.mark.parametrize("classes", [2, 3])
def test_balanced_logistic_torch_solver_matches_scikit_learn(classes):
    from embedstore.heads.logistic import LogisticHead

    X, y = _imbalanced(classes=classes)
    a = LogisticHead(C=0.5, solver="sklearn", class_weight="balanced", tol=1e-8).fit(X, y)
    b = LogisticHead(C=0.5, solver="torch", class_weight="balanced", tol=1e-8).fit(X, y)
    # the same optimum: the weighted objective to 1e-5 and the probabilities to 2e-3. Not the parameters to 2e-3:
    # the objective is flat enough that the float32 torch solver's stop moves a 3-class intercept of 7.5 by 0.014
    # (on an AVX-512 CPU) at a relative objective gap of 2e-6
    from sklearn.utils.class_weight import compute_sample_weight

    w = compute_sample_weight("balanced", y)

    def objective(m):
        Z = X.astype(np.float64) @ m.coef_.T.astype(np.float64) + m.intercept_
        if Z.shape[1] == 1:  # binary: logits (0, z)
            Z = np.hstack([np.zeros_like(Z), Z])
        Z -= Z.max(axis=1, keepdims=True)
        logp = Z - np.log(np.exp(Z).sum(axis=1, keepdims=True))
        return -(w * logp[np.arange(len(y)), np.searchsorted(m.classes_, y)]).sum() + (m.coef_.astype(np.float64) ** 2).sum()

    assert objective(b) == pytest.approx(objective(a), rel=1e-5)
    np.testing.assert_allclose(a.predict_proba(X), b.predict_proba(X), atol=2e-3)
    plain = LogisticHead(C=0.5, solver="sklearn").fit(X, y)
    minority = y != "c0"
    assert (a.predict(X)[minority] == y[minority]).mean() > (plain.predict(X)[minority] == y[minority]).mean()


def test_balanced_linear_svm_is_scikit_learns():
    from sklearn.svm import LinearSVC

    from embedstore.heads.linear import LinearSVMHead

    X, y = _imbalanced()
    head = LinearSVMHead(C=0.1, class_weight="balanced").fit(X, y)
    ref = LinearSVC(C=0.1, class_weight="balanced", dual="auto", max_iter=2000,
                    random_state=np.random.RandomState(0).randint(2**31 - 1)).fit(X, np.unique(y, return_inverse=True)[1])
    np.testing.assert_allclose(head.coef_, ref.coef_, atol=1e-4)
    with pytest.raises(ValueError, match="class_weight must be None, .balanced. or a dict"):
        LinearSVMHead(class_weight="auto").fit(X, y)


def test_fit_head_class_weight_option(tmp_path):
    from embedstore.ingest import build
    from embedstore.modelfile import load_head

    make_image_folder(tmp_path / "photos", classes=("cat", "dog"), per_class=10)
    build(tmp_path / "photos", tmp_path / "s.h5", encoder="test:tiny", workers=0, precision="fp32", progress=False)
    r = embed("fit-head", "logistic", "--store", tmp_path / "s.h5", "--class-weight", "balanced", "--out", tmp_path / "h", "--json")
    assert r.exit_code == 0, r.output
    assert any("class_weight balanced" in n for n in json.loads(r.output)["notes"])
    head, _ = load_head(tmp_path / "h")
    assert head.class_weight == "balanced"
    for args, message in [(["knn", "--class-weight", "balanced"], "logistic and linear-svm heads"),
                          (["logistic", "--class-weight", "heavy"], "must be none or balanced")]:
        r = embed("fit-head", *args, "--store", tmp_path / "s.h5")
        assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output
