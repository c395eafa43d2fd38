"""Pairwise accuracy and its image-resampling bootstrap."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from model.data import ratio_pairs
from model.evaluate import bootstrap_accuracy, resampled_accuracy, validation_metrics


def expanded_accuracy(predicted: np.ndarray, truth: np.ndarray, counts: np.ndarray) -> float:
    """Brute force: list every drawn copy of every image, then score every qualifying pair."""
    copies = [i for i, c in enumerate(counts) for _ in range(int(c))]
    hits = total = 0
    for i, j in itertools.permutations(copies, 2):
        if truth[i] + 1 >= 2 * (truth[j] + 1):  # i at least 2x more viral than j
            total += 1
            hits += predicted[i] > predicted[j]
    return hits / total


def test_resampled_accuracy_matches_brute_force() -> None:
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 200, size=12).astype(float)
    predicted = truth + rng.normal(scale=60, size=12)
    pairs = ratio_pairs(truth, 2.0)
    counts = rng.multinomial(12, np.full(12, 1 / 12), size=5)
    got = resampled_accuracy(predicted, pairs, counts)
    for row, value in zip(counts, got, strict=True):
        assert value == pytest.approx(expanded_accuracy(predicted, truth, row))


def test_bootstrap_interval() -> None:
    rng = np.random.default_rng(0)
    truth = rng.lognormal(3, 1.5, size=150)
    noisy = np.log1p(truth) + rng.normal(scale=1.5, size=150)
    pairs = ratio_pairs(truth, 2.0)
    acc, lo, hi = bootstrap_accuracy(noisy, pairs, 150, n_boot=500)
    assert acc == pytest.approx(np.mean(noisy[pairs[:, 0]] > noisy[pairs[:, 1]]))
    assert lo < acc < hi
    assert 0.02 < hi - lo < 0.3
    assert bootstrap_accuracy(truth, pairs, 150, n_boot=200)[1:] == (1.0, 1.0)


def test_validation_metrics_report_both_protocols() -> None:
    rng = np.random.default_rng(0)
    truth = rng.lognormal(3, 1.5, size=100)
    metrics = validation_metrics(-truth, truth)  # a perfectly wrong predictor
    assert metrics["val_acc"] == 0.0
    assert metrics["val_acc_extreme"] == 0.0
    assert metrics["extreme_k"] == 20
    assert metrics["val_pairs"] == len(ratio_pairs(truth, 2.0))
