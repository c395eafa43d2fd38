"""Ridge regression of log engagement on pooled features: the linear probe, and a warm start.

    y = log(1 + score),  x = pooled trunk features (N, L)
    beta = argmin |(x - mu)/sd beta - (y - mean y)|^2 + lambda |beta|^2

The penalty is picked from 1, 10, ..., 1e5 by pairwise accuracy (pairs at least `ratio` apart)
on the last fifth of the training images, then the model is refitted on all of them. Written
back in the network's own units, the fit is a linear head: s = w . x + b with w = beta / sd and
b = mean y - w . mu, so it can initialise the siamese network's head (`--head-init ridge`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from training.accuracy import pair_accuracy
from training.pairs import ratio_pairs

LAMBDAS = tuple(10.0**p for p in range(6))

Array = NDArray[np.float64]


@dataclass(frozen=True)
class LinearScore:
    """s = weight . x + bias, in the units of the features it was fitted on."""

    weight: Array  # (L,)
    bias: float
    penalty: float  # the chosen lambda

    def __call__(self, x: Array) -> Array:  # (N, L) -> (N,)
        return np.asarray(x, dtype=np.float64) @ self.weight + self.bias


def _solve(x: Array, y: Array, penalty: float) -> Array:
    return np.linalg.solve(x.T @ x + penalty * np.eye(x.shape[1]), x.T @ (y - y.mean()))


def fit_ridge(features: Array, scores: Array, ratio: float = 2.0) -> LinearScore:
    """Ridge of log(1 + scores) on `features` (N, L), the penalty chosen on an inner fold."""
    x = np.asarray(features, dtype=np.float64)
    y = np.log1p(np.asarray(scores, dtype=np.float64))
    mu, sd = x.mean(0), x.std(0) + 1e-6
    z = (x - mu) / sd
    fold = len(z) * 4 // 5
    inner_pairs = ratio_pairs(np.expm1(y[fold:]), ratio)

    def inner_accuracy(penalty: float) -> float:
        predicted = z[fold:] @ _solve(z[:fold], y[:fold], penalty)
        return pair_accuracy(predicted, inner_pairs)

    penalty = max(LAMBDAS, key=inner_accuracy)
    beta = _solve(z, y, penalty)
    weight = beta / sd
    return LinearScore(weight, float(y.mean() - weight @ mu), penalty)
