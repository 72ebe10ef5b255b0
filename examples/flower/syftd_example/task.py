"""The model and data: y = X·w + b on synthetic data, one partition per node, plain numpy."""

from __future__ import annotations

import numpy as np

FEATURES = 4
TRUE_W = np.array([1.5, -2.0, 0.5, 3.0])
TRUE_B = 0.25


def initial_weights() -> list[np.ndarray]:
    """All-zero weights and bias."""
    return [np.zeros(FEATURES), np.zeros(1)]


def partition(partition_id: int, samples: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """This node's data: a fixed seed per partition, a little noise."""
    rng = np.random.default_rng(1000 + partition_id)
    x = rng.normal(size=(samples, FEATURES))
    y = x @ TRUE_W + TRUE_B + rng.normal(scale=0.01, size=samples)
    return x, y


def sgd_step(weights: list[np.ndarray], x: np.ndarray, y: np.ndarray, lr: float) -> float:
    """One full-batch gradient step in place; the mean squared error before it."""
    w, b = weights
    error = x @ w + b[0] - y
    w -= lr * 2 * x.T @ error / len(y)
    b -= lr * 2 * error.mean()
    return float((error**2).mean())
