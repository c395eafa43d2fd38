"""The one pairwise accuracy: by hand, ties, resamples, and the pairs it is usually given."""

from __future__ import annotations

import numpy as np
import pytest

from training.accuracy import all_ordered_pairs, pair_accuracy


def test_pair_accuracy_by_hand() -> None:
    # Pairs with different scores: (1, 0), (2, 0), (3, 0), (1, 2), (1, 3); all ordered right.
    truth = np.array([0, 2, 1, 1])
    assert pair_accuracy(np.array([0.1, 0.5, 0.3, 0.3]), all_ordered_pairs(truth)) == 1.0
    # (1 > 0) wrong, (2 > 0) wrong, (2 > 1) right.
    got = pair_accuracy(np.array([1.0, 0.0, 0.5]), all_ordered_pairs(np.array([0, 1, 2])))
    assert got == pytest.approx(1 / 3)
    assert pair_accuracy(np.array([1.0, 1.0]), np.array([[1, 0]])) == 0.5  # a tie: half
    assert np.isnan(pair_accuracy(np.array([1.0, 2.0]), np.zeros((0, 2), dtype=np.int64)))


def test_all_ordered_pairs_lists_each_pair_of_different_scores_once() -> None:
    pairs = all_ordered_pairs(np.array([3.0, 1.0, 3.0, 2.0]))
    assert sorted(map(tuple, pairs.tolist())) == [(0, 1), (0, 3), (2, 1), (2, 3), (3, 1)]


def test_resamples_weigh_each_pair_by_how_often_both_images_were_drawn() -> None:
    predicted = np.array([0.0, 1.0, 2.0])
    pairs = np.array([[1, 0], [2, 0], [0, 2]])  # right, right, wrong
    counts = np.array([[1, 1, 1], [2, 1, 1], [0, 1, 1], [0, 3, 0]])
    got = pair_accuracy(predicted, pairs, counts)
    # Pair (a, b) weighs counts[a] * counts[b]: [1,1,1] -> 2/3; [2,1,1] -> (2 + 2) / 6;
    # image 0 not drawn ([0,1,1], [0,3,0]) leaves no pair: NaN.
    np.testing.assert_allclose(got[:2], [2 / 3, 2 / 3])
    assert np.isnan(got[2:]).all()
    assert pair_accuracy(predicted, pairs, np.ones((1, 3)))[0] == pair_accuracy(predicted, pairs)
