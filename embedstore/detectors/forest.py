"""Isolation forest: trained by scikit-learn, kept and scored as flat arrays (no pickled trees)."""

from __future__ import annotations

import numpy as np

from .base import Detector


def average_path_length(n: np.ndarray) -> np.ndarray:
    """Expected path length of an unsuccessful BST search among n items (Liu et al.)."""
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(n)
    out[n == 2] = 1.0
    big = n > 2
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    return out


class IsolationForestDetector(Detector):
    """Short average isolation path = anomalous; same scores as scikit-learn's IsolationForest."""

    kind = "iforest"
    _state_arrays = ("feature_", "threshold_", "left_", "right_", "leaf_size_", "tree_start_", "max_samples_")

    def __init__(self, n_estimators: int = 100, max_samples="auto", contamination: float = 0.05, random_state=0):
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.contamination = contamination
        self.random_state = random_state

    def _fit(self, X: np.ndarray) -> None:
        from sklearn.ensemble import IsolationForest

        forest = IsolationForest(n_estimators=self.n_estimators, max_samples=self.max_samples,
                                 random_state=self.random_state).fit(X)
        feats, thr, left, right, size, start = [], [], [], [], [], [0]
        for tree, fmap in zip(forest.estimators_, forest.estimators_features_):
            t = tree.tree_
            leaf = t.children_left == -1
            feats.append(np.where(leaf, -1, np.asarray(fmap)[np.maximum(t.feature, 0)]))
            thr.append(t.threshold)
            left.append(np.where(leaf, -1, t.children_left + start[-1]))
            right.append(np.where(leaf, -1, t.children_right + start[-1]))
            size.append(t.n_node_samples)
            start.append(start[-1] + t.node_count)
        self.feature_ = np.concatenate(feats).astype(np.int32)
        self.threshold_ = np.concatenate(thr).astype(np.float64)
        self.left_ = np.concatenate(left).astype(np.int64)
        self.right_ = np.concatenate(right).astype(np.int64)
        self.leaf_size_ = np.concatenate(size).astype(np.int64)
        self.tree_start_ = np.asarray(start[:-1], dtype=np.int64)
        self.max_samples_ = np.int64(forest.max_samples_)

    def _score(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        n = len(X)
        total = np.zeros(n)
        rows = np.arange(n)
        for root in self.tree_start_:
            node = np.full(n, root, dtype=np.int64)
            depth = np.zeros(n)
            active = self.left_[node] != -1
            while active.any():
                a = rows[active]
                nd = node[a]
                go_left = X[a, self.feature_[nd]] <= self.threshold_[nd]
                node[a] = np.where(go_left, self.left_[nd], self.right_[nd])
                depth[a] += 1
                active = self.left_[node] != -1
            total += depth + average_path_length(self.leaf_size_[node])
        mean_depth = total / len(self.tree_start_)
        return -(2.0 ** (-mean_depth / average_path_length(np.array([self.max_samples_]))[0]))
