"""The worker queue on its own, without HTTP: batching, bounds, splitting, draining."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import torch

from app.batching import Batcher, Job, QueueFullError, ShuttingDownError, collect_batch


def doubler(payloads: list[int]) -> list[int]:
    return [2 * p for p in payloads]


@pytest.fixture
def make_batcher() -> Iterator[Callable[..., Batcher[int, int]]]:
    started: list[Batcher[int, int]] = []

    def make(
        predict: Callable[[list[int]], list[int]] = doubler, **options: float
    ) -> Batcher[int, int]:
        values = {"max_batch_size": 4, "max_wait_s": 0.01, "max_pending": 100, **options}
        batcher: Batcher[int, int] = Batcher(
            predict,
            max_batch_size=int(values["max_batch_size"]),
            max_wait_s=values["max_wait_s"],
            max_pending=int(values["max_pending"]),
            close_when_idle=bool(values.get("close_when_idle", False)),
        )
        batcher.start()
        started.append(batcher)
        return batcher

    yield make
    for batcher in started:
        batcher.stop(timeout=5)


def test_collect_batch_closes_at_max_size_without_waiting() -> None:
    jobs: queue.SimpleQueue[Job[int, int] | None] = queue.SimpleQueue()
    for i in range(5):
        jobs.put(Job(i))
    started = time.monotonic()
    batch = collect_batch(jobs, max_size=3, max_wait_s=10.0)
    assert [job.payload for job in batch] == [0, 1, 2]
    assert time.monotonic() - started < 1.0


def test_collect_batch_closes_at_the_deadline_after_the_first_job() -> None:
    jobs: queue.SimpleQueue[Job[int, int] | None] = queue.SimpleQueue()
    jobs.put(Job(0))
    threading.Timer(0.02, lambda: jobs.put(Job(1))).start()
    threading.Timer(0.5, lambda: jobs.put(Job(2))).start()
    started = time.monotonic()
    batch = collect_batch(jobs, max_size=10, max_wait_s=0.15)
    elapsed = time.monotonic() - started
    assert [job.payload for job in batch] == [0, 1]
    assert 0.14 <= elapsed < 0.45


def test_collect_batch_stops_on_the_sentinel_and_keeps_it_for_the_next_call() -> None:
    jobs: queue.SimpleQueue[Job[int, int] | None] = queue.SimpleQueue()
    jobs.put(Job(7))
    jobs.put(None)
    assert [job.payload for job in collect_batch(jobs, 10, 5.0)] == [7]
    assert collect_batch(jobs, 10, 5.0) == []


def test_images_from_different_requests_share_a_batch_and_keep_their_order(
    make_batcher: Callable[..., Batcher[int, int]],
) -> None:
    batcher = make_batcher(max_batch_size=8, max_wait_s=0.2)
    with batcher.reserve(2) as first, batcher.reserve(3) as second:
        futures_a = first.submit([1, 2])
        futures_b = second.submit([10, 20, 30])
        assert [f.result(timeout=5) for f in futures_a] == [2, 4]
        assert [f.result(timeout=5) for f in futures_b] == [20, 40, 60]
    assert list(batcher.recent_batch_sizes) == [5]


def test_a_full_queue_refuses_at_once(make_batcher: Callable[..., Batcher[int, int]]) -> None:
    batcher = make_batcher(max_pending=3, max_wait_s=0.2)
    held = batcher.reserve(2)
    with pytest.raises(QueueFullError):
        batcher.reserve(2)
    held.release()
    batcher.reserve(3).release()
    assert batcher.pending == 0


def test_out_of_memory_splits_the_batch_and_every_image_is_scored(
    make_batcher: Callable[..., Batcher[int, int]],
) -> None:
    calls: list[int] = []

    def fits_two(payloads: list[int]) -> list[int]:
        calls.append(len(payloads))
        if len(payloads) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated by the test)")
        return doubler(payloads)

    batcher = make_batcher(fits_two, max_batch_size=8, max_wait_s=0.2)
    with batcher.reserve(8) as slots:
        futures = slots.submit(list(range(8)))
        assert [f.result(timeout=5) for f in futures] == [2 * i for i in range(8)]
    assert calls == [8, 4, 2, 2, 4, 2, 2]


def test_a_failing_image_fails_only_its_own_future(
    make_batcher: Callable[..., Batcher[int, int]],
) -> None:
    def rejects_negative(payloads: list[int]) -> list[int]:
        if any(p < 0 for p in payloads):
            raise ValueError("negative payload")
        return doubler(payloads)

    batcher = make_batcher(rejects_negative, max_batch_size=8, max_wait_s=0.2)
    with batcher.reserve(4) as slots:
        futures = slots.submit([1, -1, 3, 4])
        assert futures[1].exception(timeout=5) is not None
        assert [futures[i].result(timeout=5) for i in (0, 2, 3)] == [2, 6, 8]
    assert batcher.pending == 0


def test_close_refuses_new_work_and_stop_finishes_admitted_work(
    make_batcher: Callable[..., Batcher[int, int]],
) -> None:
    batcher = make_batcher(max_batch_size=8, max_wait_s=0.3)
    slots = batcher.reserve(2)
    futures = slots.submit([5, 6])
    batcher.close()
    with pytest.raises(ShuttingDownError):
        batcher.reserve(1)
    assert batcher.stop(timeout=5)
    assert [f.result(timeout=0) for f in futures] == [10, 12]
    assert batcher.pending == 0


def test_cancelled_images_are_skipped_and_free_their_slots(
    make_batcher: Callable[..., Batcher[int, int]],
) -> None:
    seen: list[int] = []

    def record(payloads: list[int]) -> list[int]:
        seen.extend(payloads)
        return doubler(payloads)

    batcher = make_batcher(record, max_batch_size=8, max_wait_s=0.2)
    with batcher.reserve(2) as slots:
        gone, kept = slots.submit([1, 2])
        assert gone.cancel()
        assert kept.result(timeout=5) == 4
    assert seen == [2]
    assert batcher.drain(timeout=5)


def test_close_when_idle_skips_the_wait_but_still_waits_for_admitted_images(
    make_batcher: Callable[..., Batcher[int, int]],
) -> None:
    batcher = make_batcher(max_batch_size=8, max_wait_s=5.0, close_when_idle=True)
    started = time.monotonic()
    with batcher.reserve(1) as alone:
        assert alone.submit([1])[0].result(timeout=2) == 2
    assert time.monotonic() - started < 1.0
    with batcher.reserve(1) as first, batcher.reserve(1) as second:
        future = first.submit([3])[0]
        time.sleep(0.1)  # the second request is still "decoding": the batch waits for it
        assert not future.done()
        assert second.submit([4])[0].result(timeout=2) == 8
        assert future.result(timeout=2) == 6
    assert list(batcher.recent_batch_sizes) == [1, 2]
