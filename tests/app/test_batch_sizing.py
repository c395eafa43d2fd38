"""On the CPU the service times the forward pass at start-up and batches no larger than the
size with the most images/s (`VIRALIENCY_CPU_BATCH_SIZING`)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from app.cuda_graphs import buckets
from app.engine import Engine, choose_batch_size

from .helpers import Serve


@pytest.mark.parametrize(
    ("rates", "chosen"),
    [
        ({1: 7.6, 2: 6.2, 4: 6.1}, 1),  # 448 px on 2 cores: batching only costs
        ({1: 27.0, 2: 40.0, 4: 50.0, 8: 52.0, 16: 51.0}, 4),  # 50 is within 10% of 52, 40 is not
        ({1: 10.0, 2: 20.0, 4: 40.0, 8: 80.0}, 8),
        ({1: 27.1, 2: 28.2, 4: 32.3, 8: 32.0, 16: 30.0}, 4),  # flat from 4: not 16
    ],
)
def test_the_smallest_batch_within_ten_percent_of_the_best_is_chosen(
    rates: dict[int, float], chosen: int
) -> None:
    assert choose_batch_size(rates) == chosen


def test_batch_rates_time_the_bucket_sizes_and_stop_once_two_fall_behind(
    checkpoint_dir: Path,
) -> None:
    engine = Engine.load(checkpoint_dir, "cpu")
    rates = engine.batch_rates(16)
    sizes = list(rates)
    assert sizes == buckets(16)[: len(sizes)]
    assert all(rate > 0 for rate in rates.values())
    if len(sizes) < len(buckets(16)):  # stopped early: the last two were 10% behind the best
        best = max(rates.values())
        assert rates[sizes[-1]] < 0.9 * best
        assert rates[sizes[-2]] < 0.9 * best


async def test_a_cpu_service_batches_at_the_size_its_start_up_timings_chose(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="app.service"):
        async with serve(cpu_batch_sizing=True, max_batch_size=16) as (app, _):
            [record] = [r for r in caplog.records if r.getMessage() == "batch size chosen"]
            rates = {int(size): rate for size, rate in record.images_per_s.items()}  # type: ignore[attr-defined]
            assert record.batch_size == choose_batch_size(rates)  # type: ignore[attr-defined]
            assert app.state.service.batcher.max_batch_size == record.batch_size  # type: ignore[attr-defined]
    async with serve(cpu_batch_sizing=False, max_batch_size=16) as (app, _):
        assert app.state.service.batcher.max_batch_size == 16
