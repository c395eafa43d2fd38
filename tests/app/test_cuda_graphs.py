"""CUDA graphs of the forward pass (app/cuda_graphs.py): the buckets everywhere, the replays on
a GPU (skipped without one; `bench/gpu_run.sh` runs them on a lent machine)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from app.cuda_graphs import bucket_for, buckets
from app.engine import Engine

from .helpers import on_both_archs


@pytest.mark.parametrize(
    ("largest", "expected"),
    [
        (1, [1]),
        (2, [1, 2]),
        (8, [1, 2, 4, 8]),
        (48, [1, 2, 4, 8, 16, 32, 48]),
        (64, [1, 2, 4, 8, 16, 32, 64]),
    ],
)
def test_buckets_are_powers_of_two_up_to_the_largest_batch(
    largest: int, expected: list[int]
) -> None:
    assert buckets(largest) == expected


def test_a_batch_goes_to_the_smallest_bucket_that_holds_it() -> None:
    sizes = buckets(48)
    assert [bucket_for(n, sizes) for n in (1, 2, 3, 5, 16, 17, 33, 48)] == [
        1,
        2,
        4,
        8,
        16,
        32,
        48,
        48,
    ]
    assert bucket_for(49, sizes) is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@on_both_archs
def test_graph_replays_give_the_eager_outputs_at_every_batch_size(
    served_checkpoint: Path,
) -> None:
    eager = Engine.load(served_checkpoint, "cuda")
    graphed = Engine.load(served_checkpoint, "cuda")
    graphed.capture_graphs(8)
    assert graphed.graphs is not None
    rng = np.random.default_rng(0)
    size = eager.input_size
    for n in (1, 3, 8, 11):  # a bucket, a padded batch, the largest, above it (eager)
        images = list(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8))
        for want, got in zip(eager.predict(images), graphed.predict(images), strict=True):
            assert got.score == pytest.approx(want.score, abs=1e-3)
            np.testing.assert_allclose(got.viraliency, want.viraliency, atol=1e-2)
    # A small batch after a large one reads its own rows, not the last replay's.
    one = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8)]
    assert graphed.predict(one)[0].score == pytest.approx(eager.predict(one)[0].score, abs=1e-3)
