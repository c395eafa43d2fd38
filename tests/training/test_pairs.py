"""Tests for training.pairs: the median, extreme and ratio protocols and the epoch samplers."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from training.data import DataError, LabelledPair, ScoredImage, scores_array
from training.pairs import (
    PairProtocol,
    PairSampler,
    extreme_pairs,
    index_pairs,
    median_pairs,
    orient_pairs,
    ratio_pairs,
    to_labelled_pairs,
    unused_images,
)


def _fake_images(n: int, root: Path = Path("/data")) -> list[ScoredImage]:
    return [ScoredImage(root / f"img{i:03d}.png", float(i)) for i in range(n)]


# --------------------------------------------------------------------------------------------
# Pair protocols
# --------------------------------------------------------------------------------------------


def test_median_pairs_straddle_the_median() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 30, size=101).astype(float)  # ties, including at the median
    pairs = median_pairs(scores, 500, np.random.default_rng(1))
    median = np.median(scores)
    assert pairs.shape == (500, 2)
    assert pairs.dtype == np.int64
    assert np.all(scores[pairs[:, 0]] > median)
    assert np.all(scores[pairs[:, 1]] < median)
    assert len(np.unique(pairs[:, 0])) > 10  # sampled, not one fixed pair


def test_median_pairs_all_equal_raises() -> None:
    with pytest.raises(DataError, match="no median pair"):
        median_pairs(np.full(10, 3.0), 5, np.random.default_rng(0))


def test_extreme_pairs_top_k_by_bottom_k() -> None:
    scores = np.random.default_rng(2).permutation(30).astype(float) * 1.5
    k = 4
    pairs = extreme_pairs(scores, k)
    ranked = sorted(range(len(scores)), key=lambda i: scores[i])
    top, bottom = set(ranked[-k:]), set(ranked[:k])
    assert pairs.shape == (k * k, 2)
    assert {(int(a), int(b)) for a, b in pairs} == {(a, b) for a in top for b in bottom}
    np.testing.assert_array_equal(extreme_pairs(scores, k), pairs)


def test_extreme_pairs_clips_k_and_handles_ties() -> None:
    assert extreme_pairs(np.arange(5.0), 100).shape == (4, 2)  # k clipped to 5 // 2
    pairs = extreme_pairs(np.array([1.0, 2.0, 2.0, 3.0]), 2)  # a 2 on each side: pair dropped
    assert {(int(a), int(b)) for a, b in pairs} == {(3, 0), (3, 1), (2, 0)}
    with pytest.raises(DataError, match="no extreme pair"):
        extreme_pairs(np.ones(6), 3)


def test_ratio_pairs_match_brute_force() -> None:
    scores = np.random.default_rng(3).integers(0, 40, size=35).astype(float)
    ratio = 2.5
    pairs = ratio_pairs(scores, ratio)
    expected = sorted(
        (a, b)
        for a in range(len(scores))
        for b in range(len(scores))
        if scores[a] + 1 >= ratio * (scores[b] + 1)
    )
    assert [(int(a), int(b)) for a, b in pairs] == expected
    assert len(set(expected)) == len(expected) > 0


def test_ratio_pairs_sampled_satisfy_ratio_and_cover_the_set() -> None:
    scores = np.random.default_rng(4).integers(0, 20, size=25).astype(float)
    everything = {(int(a), int(b)) for a, b in ratio_pairs(scores, 2.0)}
    sampled = ratio_pairs(scores, 2.0, n_pairs=4000, rng=np.random.default_rng(5))
    assert sampled.shape == (4000, 2)
    assert np.all(scores[sampled[:, 0]] + 1 >= 2.0 * (scores[sampled[:, 1]] + 1))
    assert {(int(a), int(b)) for a, b in sampled} == everything  # uniform draws reach them all


def test_ratio_pairs_zero_scores_and_errors() -> None:
    pairs = ratio_pairs(np.array([0.0, 1.0, 0.0]), 2.0)  # 1 + 1 >= 2 * (0 + 1)
    assert [(int(a), int(b)) for a, b in pairs] == [(1, 0), (1, 2)]
    with pytest.raises(DataError, match="differs by a factor"):
        ratio_pairs(np.array([10.0, 12.0, 15.0]), 2.0)
    with pytest.raises(DataError, match="scores >= 0"):
        ratio_pairs(np.array([-5.0, 10.0]), 2.0)
    with pytest.raises(ValueError, match="needs an rng"):
        ratio_pairs(np.arange(10.0), 2.0, n_pairs=3)


def test_orient_pairs_labels_follow_scores_and_half_are_swapped() -> None:
    scores = np.random.default_rng(6).permutation(200).astype(float)
    pairs = median_pairs(scores, 1001, np.random.default_rng(7))
    ab, labels = orient_pairs(pairs, np.random.default_rng(8))
    assert ab.shape == pairs.shape
    assert labels.shape == (1001,)
    assert labels.dtype == np.float32
    more_viral_first = scores[ab[:, 0]] > scores[ab[:, 1]]
    np.testing.assert_array_equal(labels, more_viral_first.astype(np.float32))
    swapped = np.all(ab == pairs[:, ::-1], axis=1)
    np.testing.assert_array_equal(swapped, labels == 0.0)
    assert int(swapped.sum()) == 500


def test_to_labelled_pairs() -> None:
    images = _fake_images(10)
    pairs = extreme_pairs(scores_array(images), 3)
    labelled = to_labelled_pairs(images, pairs, np.random.default_rng(0))
    score = {im.path: im.score for im in images}
    assert len(labelled) == 9
    assert all((score[p.path_a] > score[p.path_b]) == (p.label == 1) for p in labelled)
    assert {p.label for p in labelled} == {0, 1}


# --------------------------------------------------------------------------------------------
# PairSampler
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["median", "ratio"])
def test_pair_sampler_is_deterministic_per_epoch(protocol: PairProtocol) -> None:
    scores = np.random.default_rng(9).integers(0, 500, size=80).astype(float)
    sampler = PairSampler(scores, protocol=protocol, pairs_per_epoch=64, seed=11)
    again = PairSampler(scores.copy(), protocol=protocol, pairs_per_epoch=64, seed=11)
    ab0, labels0 = sampler.epoch(0)
    assert ab0.shape == (64, 2)
    assert labels0.shape == (64,)
    np.testing.assert_array_equal(again.epoch(0)[0], ab0)
    np.testing.assert_array_equal(sampler.epoch(0)[1], labels0)
    assert not np.array_equal(sampler.epoch(1)[0], ab0)
    other_seed = PairSampler(scores, protocol=protocol, pairs_per_epoch=64, seed=12)
    assert not np.array_equal(other_seed.epoch(0)[0], ab0)
    np.testing.assert_array_equal(labels0, scores[ab0[:, 0]] > scores[ab0[:, 1]])


def test_pair_sampler_fails_at_construction() -> None:
    with pytest.raises(DataError, match="no median pair"):
        PairSampler(np.ones(5))
    with pytest.raises(ValueError, match="protocol"):
        PairSampler(np.arange(5.0), protocol="random")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Images no protocol can use are counted
# --------------------------------------------------------------------------------------------


def test_unused_images_by_brute_force() -> None:
    rng = np.random.default_rng(4)
    scores = rng.integers(0, 12, size=60).astype(float)
    for ratio in (1.5, 2.0, 4.0):
        pairs = ratio_pairs(scores, ratio)
        assert unused_images(scores, "ratio", ratio) == 60 - len(np.unique(pairs))
    assert unused_images(scores, "median") == np.count_nonzero(scores == np.median(scores))
    assert unused_images(np.array([0.0, 1.0, 1.0, 5.0]), "ratio", 2.0) == 0
    assert unused_images(np.array([1.0, 2.0, 2.5, 9.0]), "ratio", 3.0) == 1  # only 2.0: none


@pytest.mark.parametrize("protocol", ["median", "ratio"])
def test_pair_sampler_logs_the_unused_count(
    protocol: PairProtocol, caplog: pytest.LogCaptureFixture
) -> None:
    scores = np.array([0.0, 1.0, 3.0, 3.0, 3.0, 9.0, 20.0])  # median 3: three at the median
    expected = {"median": 3, "ratio": unused_images(scores, "ratio", 2.0)}[protocol]
    with caplog.at_level(logging.INFO, logger="training.pairs"):
        PairSampler(scores, protocol, ratio=2.0, pairs_per_epoch=8)
    assert f"{expected} of 7 training image(s)" in caplog.text


def test_index_pairs_keeps_pairs_inside_one_side_and_counts_the_rest() -> None:
    paths = [Path(f"/d/{name}.png") for name in "abcde"]
    a, b, c, d, e = paths
    pairs = [
        LabelledPair(a, b, 1),  # both in `side`: kept, a more viral
        LabelledPair(b, c, 0),  # both in `side`: kept, c more viral
        LabelledPair(a, d, 1),  # crosses to the other side: dropped
        LabelledPair(d, e, 0),  # wholly on the other side: dropped
    ]
    side = [c, a, b]  # indices follow this list, not the pairs
    indexed, dropped = index_pairs(pairs, side)
    np.testing.assert_array_equal(indexed, [[1, 2], [0, 2]])
    assert indexed.dtype == np.int64
    assert dropped == 2
    empty, dropped_all = index_pairs(pairs, [e])
    assert empty.shape == (0, 2)
    assert dropped_all == 4
