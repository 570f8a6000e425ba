"""Numpy pieces of the ML workflow: a synthetic data set and softmax regression
trained by full-batch gradient descent. Pure functions: arrays in, arrays out."""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]

# Class centres of an iris-like data set: three species, four measurements (cm).
_CENTRES = np.array([[5.0, 3.4, 1.5, 0.2],
                     [5.9, 2.8, 4.3, 1.3],
                     [6.6, 3.0, 5.6, 2.0]])


class DataNotFoundError(LookupError):
    """The requested data set does not exist (the host falls back to another one)."""


def make_dataset(name: str, samples: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """``(X, y)``: `samples` rows around the class centres of data set `name`."""
    if name != "blobs":
        raise DataNotFoundError(f"data set {name!r} is not available (try 'blobs')")
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(_CENTRES), size=samples)
    X = _CENTRES[y] + rng.normal(scale=0.3, size=(samples, len(FEATURES)))
    return X, y


def split(X: np.ndarray, y: np.ndarray, train_share: float,
          seed: int) -> Dict[str, np.ndarray]:
    """A shuffled train/test split."""
    order = np.random.default_rng(seed + 1).permutation(len(y))
    cut = int(round(len(y) * train_share))
    tr, te = order[:cut], order[cut:]
    return {"X_train": X[tr], "y_train": y[tr], "X_test": X[te], "y_test": y[te]}


def standardise(X: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return (X - mean) / std


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def gradient_step(W: np.ndarray, b: np.ndarray, X: np.ndarray, y: np.ndarray,
                  lr: float) -> Tuple[np.ndarray, np.ndarray, float, float]:
    """One step of softmax regression: new weights, bias, loss and accuracy (before
    the step)."""
    p = softmax(X @ W + b)
    onehot = np.eye(W.shape[1])[y]
    loss = float(-np.mean(np.sum(onehot * np.log(p + 1e-12), axis=1)))
    accuracy = float(np.mean(p.argmax(axis=1) == y))
    grad = (p - onehot) / len(y)
    return W - lr * (X.T @ grad), b - lr * grad.sum(axis=0), loss, accuracy


def predict(model: Dict, X: np.ndarray) -> np.ndarray:
    """Class indices predicted by a model stored as plain lists."""
    Xs = standardise(X, np.array(model["mean"]), np.array(model["std"]))
    return (Xs @ np.array(model["W"]) + np.array(model["b"])).argmax(axis=1)


def confusion(y_true: np.ndarray, y_pred: np.ndarray, classes: int) -> np.ndarray:
    m = np.zeros((classes, classes), dtype=int)
    np.add.at(m, (y_true, y_pred), 1)
    return m
