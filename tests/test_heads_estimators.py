"""Every head passes scikit-learn's own estimator checks, and learns what it should."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from embedstore.heads.knn import KNNHead
from embedstore.heads.linear import LinearSVMHead, RidgeHead
from embedstore.heads.logistic import LogisticHead
from embedstore.heads.mlp import MLPHead

HEADS = [LogisticHead(), LinearSVMHead(), RidgeHead(), KNNHead(), MLPHead(hidden=32, max_iter=300)]


@parametrize_with_checks(HEADS)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)
