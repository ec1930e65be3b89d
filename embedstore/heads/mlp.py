"""A small MLP head: one hidden ReLU layer, trained by scikit-learn's MLPClassifier (L-BFGS on small
data, Adam with early stopping on larger)."""

from __future__ import annotations

import numpy as np

from .base import Head


class MLPHead(Head):
    """One hidden layer of `hidden` ReLU units, L2 penalty `alpha`. With 1,000 items or more (and 20
    a class) Adam in mini-batches of 200 with early stopping on a held-out 10% of the training data;
    below that full-batch L-BFGS, which scikit-learn recommends for small data: Adam there takes one
    step an epoch and ran out its 300 epochs unconverged at large alpha (80 x 1280 items: 300 Adam
    epochs 3.0 s with one thread, L-BFGS converged in 24 iterations, 1.2 s). Forward passes are plain
    numpy on the learned arrays."""

    kind = "mlp"
    sweep_param = "alpha"
    # scikit-learn's L2 term is alpha / (2 x rows in a step): at 1e-5..0.1 it changed nothing (the demo's
    # digits: every value 0.918 in cross-validation, and 0.890 on 600 items); 1 and 10 gave +1-2 points
    sweep_grid = (1e-4, 1e-2, 1.0, 10.0)
    _state_arrays = ("mean_", "scale_", "W1_", "b1_", "W2_", "b2_")

    def __init__(self, hidden: int = 256, alpha: float = 1e-4, max_iter: int = 300, early_stopping: bool = True,
                 random_state=0):
        self.hidden = hidden
        self.alpha = alpha
        self.max_iter = max_iter
        self.early_stopping = early_stopping
        self.random_state = random_state

    def _fit(self, X: np.ndarray, y_idx: np.ndarray) -> None:
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier

        from .base import blas_threads

        # standardised inputs: unit-norm embeddings have tiny per-feature scales that stall Adam
        self.mean_ = X.mean(axis=0).astype(np.float32)
        sd = X.std(axis=0)
        self.scale_ = np.where(sd > 1e-12, sd, 1.0).astype(np.float32)
        X = (X - self.mean_) / self.scale_

        # early stopping holds out 10%: only worth it with enough items for a stable held-out score
        early = self.early_stopping and len(X) >= max(1000, 20 * len(self.classes_))
        solver = "adam" if early else "lbfgs"
        mlp = MLPClassifier(hidden_layer_sizes=(int(self.hidden),), alpha=self.alpha, max_iter=self.max_iter,
                            solver=solver, early_stopping=early, random_state=self.random_state)
        batch = min(200, len(X)) if solver == "adam" else len(X)  # rows in each product
        with warnings.catch_warnings(record=True) as caught, blas_threads(batch * max(X.shape[1], int(self.hidden))):
            warnings.simplefilter("always", ConvergenceWarning)
            mlp.fit(X, y_idx)
        self.converged_ = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
        (W1, W2), (b1, b2) = mlp.coefs_, mlp.intercepts_
        if len(mlp.classes_) != len(self.classes_):  # pragma: no cover - every class is in y_idx
            raise ValueError("MLP lost a class")
        self.W1_, self.b1_ = W1.astype(np.float32), b1.astype(np.float32)
        self.W2_, self.b2_ = W2.astype(np.float32), b2.astype(np.float32)
        self.n_iter_ = int(mlp.n_iter_)
        how = "Adam, early stopping" if early else "L-BFGS, full batch"
        self.fit_path_ = f"scikit-learn MLPClassifier ({how}) in memory ({len(X)} x {X.shape[1]})"

    def _scores(self, X: np.ndarray) -> np.ndarray:
        Z = (np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_
        h = np.maximum(Z @ self.W1_ + self.b1_, 0.0)
        s = h @ self.W2_.astype(np.float64) + self.b2_
        return s[:, 0] if s.shape[1] == 1 else s
