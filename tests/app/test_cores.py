"""The decoding backlog and the torch threads a CPU batch leaves to decoding (app/cores.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from app.cores import DecodeBacklog, cores_to_yield
from app.engine import Engine
from app.settings import Settings

from .imaging import photo


def test_the_backlog_counts_queued_bytes_at_the_measured_cost_per_byte() -> None:
    backlog = DecodeBacklog(threads=2, seconds_per_byte=1e-8, weight=0.5)
    first, second = backlog.queued(1_000_000), backlog.queued(3_000_000)
    assert backlog.seconds == pytest.approx(4_000_000 * 1e-8 / 2)
    first.done(0.03)  # 3e-8 s per byte, half-weighted into 1e-8
    assert backlog.seconds_per_byte == pytest.approx(2e-8)
    assert backlog.seconds == pytest.approx(3_000_000 * 2e-8 / 2)
    first.done(0.5)  # a second finish of the same job changes nothing
    second.done()  # failed or cancelled: off the backlog, no sample
    assert backlog.pending_bytes == 0
    assert backlog.seconds_per_byte == pytest.approx(2e-8)


def test_a_batch_yields_the_decoding_threads_only_when_the_backlog_outlasts_it() -> None:
    assert cores_to_yield(backlog_s=0.2, batch_s=0.05, decode_threads=1) == 1
    assert cores_to_yield(backlog_s=0.01, batch_s=0.05, decode_threads=1) == 0


def test_a_yielding_batch_runs_on_fewer_threads_and_scores_the_same(
    checkpoint_dir: Path,
) -> None:
    before = torch.get_num_threads()
    try:
        engine = Engine.from_settings(
            Settings(checkpoint=checkpoint_dir, device="cpu", torch_threads=2)
        )
        size = engine.input_size
        images = [photo(size, size, seed) for seed in range(3)]
        full = engine.predict(images)
        assert torch.get_num_threads() == 2
        yielded = engine.predict(images, yield_cores=1)
        assert torch.get_num_threads() == 1
        engine.predict(images, yield_cores=5)  # never below one thread
        assert torch.get_num_threads() == 1
        engine.predict(images)
        assert torch.get_num_threads() == 2
        assert [p.score for p in yielded] == pytest.approx([p.score for p in full], abs=1e-5)
    finally:
        torch.set_num_threads(before)
