"""Pair protocols: turning per-image scores into training and test pairs.

The siamese model learns from pairs ("is a more viral than b?"). From per-image scores this
module builds index pairs (P, 2), more viral image first, with the protocols of Alameda-Pineda
et al. (CVPR 2017): median pairs for training (one image above the median, one below) and
extreme pairs for testing (top-k against bottom-k), plus a ratio protocol that only keeps pairs
whose scores differ by at least a factor r. `PairSampler` draws fresh pairs each epoch;
`FixedPairs` reshuffles a user's ready-made labelled pairs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from training.data import DataError, LabelledPair, ScoredImage

logger = logging.getLogger(__name__)

PairProtocol = Literal["median", "ratio"]


# --------------------------------------------------------------------------------------------
# Pair protocols: index pairs (P, 2), column 0 is the more viral image
# --------------------------------------------------------------------------------------------


def _as_scores(scores: ArrayLike) -> NDArray[np.float64]:
    """Validate scores as a 1-D finite array; pair protocols are meaningless otherwise."""
    array = np.asarray(scores, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise DataError("scores must all be finite")
    return array


def _empty_pairs() -> NDArray[np.int64]:
    return np.zeros((0, 2), dtype=np.int64)


def unused_images(scores: ArrayLike, protocol: PairProtocol, ratio: float = 2.0) -> int:
    """How many images a protocol can never put in a pair: those exactly at the median, or
    those with no partner at least `ratio` apart (after +1, as in ratio_pairs)."""
    values = _as_scores(scores)
    if values.size == 0:
        return 0
    if protocol == "median":
        median = np.median(values)
        return int(np.count_nonzero(values == median))
    index = _ratio_index(values, ratio)
    # Positions are sorted by score and first[i] > i, so sorted position j is the higher image
    # of some pair iff j >= first[0], and the lower image of one iff counts[j] > 0.
    positions = np.arange(values.size)
    paired = (positions >= index.first[0]) | (index.counts > 0)
    return int(values.size - np.count_nonzero(paired))


def median_pairs(scores: ArrayLike, n_pairs: int, rng: np.random.Generator) -> NDArray[np.int64]:
    """The paper's training protocol: one image strictly above the median, one strictly below.

    Both sides are drawn uniformly with replacement, so any number of pairs can be made and
    each epoch sees a fresh sample. Images exactly at the median are never used.
    """
    values = _as_scores(scores)
    if n_pairs < 0:
        raise ValueError(f"n_pairs must be >= 0, got {n_pairs}")
    if values.size == 0:
        raise DataError("median pairs need at least 2 images, got none")
    median = np.median(values)
    above = np.flatnonzero(values > median)
    below = np.flatnonzero(values < median)
    if above.size == 0 or below.size == 0:
        raise DataError(
            f"no median pair exists: {above.size} image(s) above and {below.size} below the "
            f"median {median:g} (are all scores equal?)"
        )
    return np.stack(
        [rng.choice(above, size=n_pairs), rng.choice(below, size=n_pairs)], axis=1
    ).astype(np.int64)


def extreme_pairs(scores: ArrayLike, k: int) -> NDArray[np.int64]:
    """The paper's test protocol: every (top-k, bottom-k) pair, k clipped to len(scores) // 2.

    Deterministic: top-k and bottom-k are the two ends of one stable ascending sort, so they
    never share an image. Pairs whose two scores are equal, possible only when ties straddle
    both ends, are dropped since neither is more viral; with distinct scores there are exactly
    k * k pairs.
    """
    values = _as_scores(scores)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = min(k, values.size // 2)
    if k == 0:
        raise DataError(f"extreme pairs need at least 2 images, got {values.size}")
    order = np.argsort(values, kind="stable")
    top, bottom = order[::-1][:k], order[:k]
    pairs = np.stack(np.meshgrid(top, bottom, indexing="ij"), axis=-1).reshape(-1, 2)
    pairs = pairs[values[pairs[:, 0]] > values[pairs[:, 1]]]
    if pairs.shape[0] == 0:
        raise DataError(f"no extreme pair exists: the top-{k} and bottom-{k} scores are equal")
    return pairs.astype(np.int64)


@dataclass(frozen=True)
class _RatioIndex:
    """All ratio pairs, implicitly: for the i-th lowest image, every image from `first[i]` on.

    Keeping the pairs as runs over the sorted order lets us count and sample them in O(n)
    memory instead of listing up to n^2 pairs.
    """

    order: NDArray[np.intp]  # image indices by ascending score
    first: NDArray[np.intp]  # per sorted position i: first sorted position j with a valid pair
    counts: NDArray[np.int64]  # per sorted position i: number of valid partners
    ends: NDArray[np.int64] = field(repr=False)  # cumulative counts


def _ratio_index(values: NDArray[np.float64], ratio: float) -> _RatioIndex:
    counts_plus_one = values + 1.0
    order = np.argsort(counts_plus_one, kind="stable")
    ascending = counts_plus_one[order]
    first = np.searchsorted(ascending, ratio * ascending, side="left")
    counts = (values.size - first).astype(np.int64)
    return _RatioIndex(order, first, counts, np.cumsum(counts))


def _ratio_pairs_at(index: _RatioIndex, flat: NDArray[np.int64]) -> NDArray[np.int64]:
    """Map flat pair numbers in [0, total) to (more viral, less viral) image index pairs."""
    low_pos = np.searchsorted(index.ends, flat, side="right")
    high_pos = index.first[low_pos] + (flat - (index.ends[low_pos] - index.counts[low_pos]))
    return np.stack([index.order[high_pos], index.order[low_pos]], axis=1).astype(np.int64)


def ratio_pairs(
    scores: ArrayLike,
    ratio: float = 2.0,
    n_pairs: int | None = None,
    rng: np.random.Generator | None = None,
) -> NDArray[np.int64]:
    """Pairs whose scores clearly differ: (hi + 1) >= ratio * (lo + 1).

    Scores are treated as counts (likes, shares), and the +1 lets an image with zero
    engagement pair with one that has some instead of making every ratio infinite or undefined;
    so scores must be >= 0. With `n_pairs=None` all such pairs are returned, sorted; otherwise
    `n_pairs` are drawn uniformly with replacement from that set without listing it.
    """
    values = _as_scores(scores)
    if not ratio > 1.0:
        raise ValueError(f"ratio must be > 1 so that pairs differ, got {ratio}")
    if values.size and values.min() < 0:
        raise DataError(
            f"ratio pairs treat scores as counts and need scores >= 0, got {values.min():g}"
        )
    index = _ratio_index(values, ratio)
    total = int(index.ends[-1]) if values.size else 0
    if total == 0:
        raise DataError(
            f"no pair of scores differs by a factor {ratio:g} (after +1); lower the ratio"
        )
    if n_pairs is None:
        n_unused = unused_images(values, "ratio", ratio)
        if n_unused:
            logger.info(
                "ratio pairs: %d of %d image(s) have no partner at least %gx apart and are unused",
                n_unused,
                values.size,
                ratio,
            )
        pairs = _ratio_pairs_at(index, np.arange(total, dtype=np.int64))
        return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
    if n_pairs < 0:
        raise ValueError(f"n_pairs must be >= 0, got {n_pairs}")
    if rng is None:
        raise ValueError("ratio_pairs needs an rng when n_pairs is given")
    if n_pairs == 0:
        return _empty_pairs()
    return _ratio_pairs_at(index, rng.integers(0, total, size=n_pairs, dtype=np.int64))


def orient_pairs(
    pairs: ArrayLike, rng: np.random.Generator
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Swap exactly half of the pairs (floor(P/2)) at random and label them.

    Protocols put the more viral image first; fed as-is the model could learn the position.
    Returns the (a, b) index array and float32 labels, 1.0 where a is the more viral image.
    Swapping exactly half also balances the labels.
    """
    array = np.asarray(pairs)
    if array.ndim != 2 or array.shape[1] != 2 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"pairs must be an integer array of shape (P, 2), got {array.shape}")
    n = array.shape[0]
    swap = rng.permutation(n) < n // 2
    oriented = array.astype(np.int64, copy=True)
    oriented[swap] = oriented[swap, ::-1]
    return oriented, (~swap).astype(np.float32)


def to_labelled_pairs(
    images: Sequence[ScoredImage], pairs: ArrayLike, rng: np.random.Generator
) -> list[LabelledPair]:
    """Turn protocol index pairs into LabelledPair rows, randomly oriented (see orient_pairs)."""
    oriented, labels = orient_pairs(pairs, rng)
    return [
        LabelledPair(images[a].path, images[b].path, int(label))
        for (a, b), label in zip(oriented.tolist(), labels.tolist(), strict=True)
    ]


# --------------------------------------------------------------------------------------------
# Fresh pairs per epoch
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PairSampler:
    """Draws fresh, randomly oriented training pairs each epoch, reproducibly.

    Epoch e uses default_rng([seed, e]), so any epoch can be regenerated (e.g. when resuming)
    without replaying the earlier ones.
    """

    scores: NDArray[np.float64]
    protocol: PairProtocol = "median"
    ratio: float = 2.0
    pairs_per_epoch: int = 10_000
    seed: int = 0

    def __post_init__(self) -> None:
        """Validate now, so a bad dataset fails at start-up rather than mid-training."""
        if self.protocol not in ("median", "ratio"):
            raise ValueError(f"protocol must be 'median' or 'ratio', got {self.protocol!r}")
        if self.pairs_per_epoch < 1:
            raise ValueError(f"pairs_per_epoch must be >= 1, got {self.pairs_per_epoch}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        scores = _as_scores(self.scores).copy()
        scores.flags.writeable = False  # the sampler's pairs must not change under it
        object.__setattr__(self, "scores", scores)
        self.epoch(0)
        n_unused = unused_images(scores, self.protocol, self.ratio)
        why = (
            "at the median"
            if self.protocol == "median"
            else f"without a partner {self.ratio:g}x apart"
        )
        logger.info(
            "%s pairs: %d of %d training image(s) are %s and never used",
            self.protocol,
            n_unused,
            scores.size,
            why,
        )

    def epoch(self, e: int) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """Oriented index pairs (P, 2) and float32 labels (P,) for epoch `e` (>= 0)."""
        if e < 0:
            raise ValueError(f"epoch must be >= 0, got {e}")
        rng = np.random.default_rng([self.seed, e])
        if self.protocol == "median":
            pairs = median_pairs(self.scores, self.pairs_per_epoch, rng)
        else:
            pairs = ratio_pairs(self.scores, self.ratio, self.pairs_per_epoch, rng)
        return orient_pairs(pairs, rng)


# --------------------------------------------------------------------------------------------
# Ready-made labelled pairs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FixedPairs:
    """A user's labelled pairs, reshuffled and re-oriented each epoch (same interface as
    PairSampler). `pairs` holds indices with the more viral image first."""

    pairs: NDArray[np.int64]
    seed: int = 0

    def epoch(self, e: int) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        rng = np.random.default_rng([self.seed, e])
        return orient_pairs(self.pairs[rng.permutation(len(self.pairs))], rng)


def index_pairs(
    pairs: Sequence[LabelledPair], images: Sequence[Path]
) -> tuple[NDArray[np.int64], int]:
    """Labelled pairs as (P, 2) indices into `images`, more viral first; pairs with an image
    outside `images` (the other side of a split) are dropped and counted."""
    where = {path: i for i, path in enumerate(images)}
    kept = [
        (where[p.path_a], where[p.path_b]) if p.label else (where[p.path_b], where[p.path_a])
        for p in pairs
        if p.path_a in where and p.path_b in where
    ]
    return np.asarray(kept, dtype=np.int64).reshape(-1, 2), len(pairs) - len(kept)
