"""Pairwise accuracy: the one definition used by training, evaluation, the report and benches.

For index pairs (a, b), image a the more viral, and predicted scores s:

    correct(a, b) = 1 if s(a) > s(b),  1/2 if s(a) = s(b),  0 otherwise
    accuracy      = sum_p w_p correct(p) / sum_p w_p

Each pair weighs 1, or, for a resample in which image i is drawn counts[r, i] times, the pair
(a, b) occurs counts[r, a] * counts[r, b] times (the image bootstrap of training/evaluate.py).
A tie counts one half, so a constant predictor scores 1/2 (chance), not 0.
"""

from __future__ import annotations

from typing import overload

import numpy as np
from numpy.typing import ArrayLike, NDArray


@overload
def pair_accuracy(predicted: ArrayLike, pairs: NDArray[np.integer]) -> float: ...


@overload
def pair_accuracy(
    predicted: ArrayLike, pairs: NDArray[np.integer], counts: NDArray[np.number]
) -> NDArray[np.float64]: ...


def pair_accuracy(
    predicted: ArrayLike, pairs: NDArray[np.integer], counts: NDArray[np.number] | None = None
) -> float | NDArray[np.float64]:
    """Share of `pairs` (P, 2), more viral first, that `predicted` (N,) orders the same way.

    With `counts` (R, N): the accuracy in each of R resamples of the images -> (R,). NaN where
    there is no pair (no pairs at all, or none drawn in a resample).
    """
    s = np.asarray(predicted, dtype=np.float64)
    pairs = np.asarray(pairs).reshape(-1, 2)
    a, b = pairs[:, 0], pairs[:, 1]
    correct = (s[a] > s[b]) + 0.5 * (s[a] == s[b])  # (P,)
    if counts is None:
        return float(correct.mean()) if len(pairs) else float("nan")
    weight = (counts[:, a] * counts[:, b]).astype(np.float64)  # (R, P)
    total = weight.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (weight @ correct) / total, np.nan)


def all_ordered_pairs(scores: ArrayLike) -> NDArray[np.int64]:
    """Every pair of images with different scores, once, the higher-scored first. -> (P, 2)"""
    s = np.asarray(scores, dtype=np.float64)
    return np.argwhere(s[:, None] > s[None, :]).astype(np.int64)
