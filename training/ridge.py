"""Ridge regression of log engagement on pooled features: the linear probe, and a warm start.

    y = log(1 + score),  x = pooled trunk features (N, L)
    beta = argmin |(x - mu)/sd beta - (y - mean y)|^2 + lambda |beta|^2

The penalty is picked from 1, 10^0.5, ..., 1e5 by the mean pairwise accuracy (pairs at least
`ratio` apart) over an inner k-fold split of the training images (one eigendecomposition per
fold serves every penalty), then the model is refitted on all of them. A penalty chosen on a
single inner fifth, as before, was noisy enough to cost the probe ~1 point of outer
cross-validated accuracy (bench/RESULTS.md, issue 11). Written
back in the network's own units, the fit is a linear head: s = w . x + b with w = beta / sd and
b = mean y - w . mu, so it can initialise the siamese network's head (`--head-init ridge`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from training.accuracy import pair_accuracy
from training.folds import assign_folds
from training.pairs import ratio_pairs

LAMBDAS = tuple(10.0 ** (p / 2) for p in range(11))

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
    return _path(x, y, (penalty,))[0]


def _path(x: Array, y: Array, penalties: tuple[float, ...]) -> list[Array]:
    """Ridge coefficients for every penalty from one eigendecomposition: of x'x (L x L), or,
    with more features than images, of xx' (N x N), since beta = x'(xx' + lambda I)^-1 y too."""
    centred = y - y.mean()
    if x.shape[1] <= x.shape[0]:
        eig, vectors = np.linalg.eigh(x.T @ x)
        projected = vectors.T @ (x.T @ centred)
        return [vectors @ (projected / (eig + penalty)) for penalty in penalties]
    eig, vectors = np.linalg.eigh(x @ x.T)
    projected = vectors.T @ centred
    return [x.T @ (vectors @ (projected / (eig + penalty))) for penalty in penalties]


def fit_ridge(
    features: Array, scores: Array, ratio: float = 2.0, folds: int = 5, seed: int = 0
) -> LinearScore:
    """Ridge of log(1 + scores) on `features` (N, L), the penalty chosen by inner k-fold."""
    x = np.asarray(features, dtype=np.float64)
    y = np.log1p(np.asarray(scores, dtype=np.float64))
    mu, sd = x.mean(0), x.std(0) + 1e-6
    z = (x - mu) / sd
    inner = assign_folds(len(z), min(folds, len(z)), seed)
    accuracy = np.zeros(len(LAMBDAS))
    for j in range(inner.max() + 1):
        train, test = inner != j, inner == j
        pairs = ratio_pairs(np.maximum(np.expm1(y[test]), 0.0), ratio)
        for i, beta in enumerate(_path(z[train], y[train], LAMBDAS)):
            accuracy[i] += np.nan_to_num(pair_accuracy(z[test] @ beta, pairs))
    penalty = LAMBDAS[int(np.argmax(accuracy))]
    beta = _solve(z, y, penalty)
    weight = beta / sd
    return LinearScore(weight, float(y.mean() - weight @ mu), penalty)
