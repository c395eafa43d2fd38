"""The worker queue on its own, without HTTP: batching (on a fake clock), bounds, deadline-aware
admission, splitting, draining."""

from __future__ import annotations

import math
import queue
import time
from collections.abc import Callable, Iterator

import pytest
import torch

from app.batching import Batcher, Job, QueueFullError, ShuttingDownError, collect_batch
from app.rate import ServiceRate


def doubler(payloads: list[int]) -> list[int]:
    return [2 * p for p in payloads]


@pytest.fixture
def make_batcher() -> Iterator[Callable[..., Batcher[int, int]]]:
    started: list[Batcher[int, int]] = []

    def make(
        predict: Callable[[list[int]], list[int]] = doubler,
        on_batch: list[int] | None = None,
        **options: float,
    ) -> Batcher[int, int]:
        """on_batch: a list that gets each batch's size."""
        values = {"max_batch_size": 4, "max_wait_s": 0.01, "max_pending": 100, **options}
        batcher: Batcher[int, int] = Batcher(
            predict,
            max_batch_size=int(values["max_batch_size"]),
            max_wait_s=values["max_wait_s"],
            max_pending=int(values["max_pending"]),
            close_when_idle=bool(values.get("close_when_idle", False)),
            on_batch=None if on_batch is None else lambda size, _: on_batch.append(size),
        )
        batcher.start()
        started.append(batcher)
        return batcher

    yield make
    for batcher in started:
        batcher.stop(timeout=5)


class ScriptedQueue:
    """A job queue on a fake clock: each job arrives at its scripted time, and waiting for one
    moves the clock instead of sleeping, so batch collection is tested without wall-clock time."""

    def __init__(self, arrivals: list[tuple[float, Job[int, int] | None]]) -> None:
        self.now = 0.0
        self._arrivals = sorted(arrivals, key=lambda pair: pair[0])

    def clock(self) -> float:
        return self.now

    def empty(self) -> bool:
        return not self._arrivals or self._arrivals[0][0] > self.now

    def get_nowait(self) -> Job[int, int] | None:
        return self.get(timeout=0.0)

    def get(self, block: bool = True, timeout: float | None = None) -> Job[int, int] | None:
        if not self._arrivals:
            raise AssertionError("would block forever") if timeout is None else queue.Empty
        at, job = self._arrivals[0]
        if timeout is not None and at > self.now + timeout:
            self.now += timeout
            raise queue.Empty
        self.now = max(self.now, at)
        self._arrivals.pop(0)
        return job

    def put(
        self, job: Job[int, int] | None, block: bool = True, timeout: float | None = None
    ) -> None:
        self._arrivals.insert(0, (self.now, job))


def payloads(batch: list[Job[int, int]]) -> list[int]:
    return [job.payload for job in batch]


def test_collect_batch_closes_at_max_size_without_waiting() -> None:
    jobs = ScriptedQueue([(0.0, Job(i)) for i in range(5)])
    batch = collect_batch(jobs, max_size=3, max_wait_s=10.0, clock=jobs.clock)
    assert payloads(batch) == [0, 1, 2]
    assert jobs.now == 0.0


def test_collect_batch_closes_at_the_deadline_after_the_first_job() -> None:
    jobs = ScriptedQueue([(1.0, Job(0)), (1.02, Job(1)), (1.5, Job(2))])
    batch = collect_batch(jobs, max_size=10, max_wait_s=0.15, clock=jobs.clock)
    assert payloads(batch) == [0, 1]
    assert jobs.now == pytest.approx(1.15)  # the deadline counts from the first job
    assert payloads(collect_batch(jobs, max_size=10, max_wait_s=0.15, clock=jobs.clock)) == [2]


def test_collect_batch_closes_when_nothing_else_is_coming() -> None:
    jobs = ScriptedQueue([(0.0, Job(0)), (0.0, Job(1)), (0.5, Job(2))])
    batch = collect_batch(jobs, 10, 5.0, nothing_coming=lambda _: True, clock=jobs.clock)
    assert payloads(batch) == [0, 1]
    assert jobs.now == 0.0


def test_collect_batch_stops_on_the_sentinel_and_keeps_it_for_the_next_call() -> None:
    jobs: queue.SimpleQueue[Job[int, int] | None] = queue.SimpleQueue()
    jobs.put(Job(7))
    jobs.put(None)
    assert [job.payload for job in collect_batch(jobs, 10, 5.0)] == [7]
    assert collect_batch(jobs, 10, 5.0) == []


def test_a_slot_is_free_when_its_result_arrives(
    make_batcher: Callable[..., Batcher[int, int]],
) -> None:
    """Review defect: the slot was released only after the result was set, so a caller that
    reserved again as soon as it had its answer could find the queue of one still full."""
    batcher = make_batcher(max_pending=1, max_wait_s=0.0)
    pending_at_result: list[int] = []
    for i in range(20):
        with batcher.reserve(1) as slot:  # strictly sequential: never a QueueFullError
            (future,) = slot.submit([i])
            future.add_done_callback(lambda _: pending_at_result.append(batcher.pending))
            assert future.result(timeout=5) == 2 * i
    assert pending_at_result == [0] * 20


def test_a_slot_is_free_when_its_error_arrives(
    make_batcher: Callable[..., Batcher[int, int]],
) -> None:
    def fails(payloads: list[int]) -> list[int]:
        raise ValueError("injected")

    batcher = make_batcher(fails, max_pending=1, max_wait_s=0.0)
    pending_at_error: list[int] = []
    with batcher.reserve(1) as slot:
        (future,) = slot.submit([1])
        future.add_done_callback(lambda _: pending_at_error.append(batcher.pending))
        assert isinstance(future.exception(timeout=5), ValueError)
    assert pending_at_error == [0]


def measured(images_per_s: float) -> ServiceRate:
    rate = ServiceRate(1000.0)
    rate.observe(round(images_per_s), 1.0)  # the first measurement replaces the warm-up rate
    return rate


def test_admission_refuses_what_would_wait_past_the_limit() -> None:
    """At 10 images/s with a 1 s limit: 10 images may wait, the 11th is refused with its
    estimated wait; an empty queue admits even what it cannot finish in time."""
    batcher: Batcher[int, int] = Batcher(
        doubler, 8, 0.0, max_pending=100, rate=measured(10), admit_within_s=1.0, clock=lambda: 0
    )  # never started and a clock that stands still: the queue only grows
    assert batcher.estimated_wait_s(1) == pytest.approx(0.1)
    batcher.reserve(12).release()  # alone: 1.2 s, but it has nothing better to wait for
    batcher.reserve(4)
    batcher.reserve(6)
    with pytest.raises(QueueFullError) as refused:
        batcher.reserve(1)
    assert refused.value.wait_s == pytest.approx(1.1)
    assert refused.value.limit_s == 1.0
    assert batcher.pending == 10
    with pytest.raises(QueueFullError) as ceiling:
        Batcher(doubler, 8, 0.0, max_pending=3).reserve(4)
    assert ceiling.value.wait_s is None


def test_until_a_batch_is_measured_one_batch_is_admitted() -> None:
    """Slow start: the warm-up rate (1,000 images/s here) times the forward pass alone."""
    batcher: Batcher[int, int] = Batcher(
        doubler, 8, 0.0, max_pending=100, rate=ServiceRate(1000.0), admit_within_s=1.0
    )
    batcher.reserve(5)
    batcher.reserve(3)
    with pytest.raises(QueueFullError, match="not measured yet"):
        batcher.reserve(1)


def test_a_batch_overdue_adds_its_lateness_to_the_wait_at_once() -> None:
    now = [0.0]
    batcher: Batcher[int, int] = Batcher(
        doubler, 8, 0.0, max_pending=100, rate=measured(100), clock=lambda: now[0]
    )
    batcher.reserve(4)  # admitted at t=0; no batch has ended since
    now[0] = 0.05
    assert batcher.lateness_s() == 0.0  # 8 images in 0.08 s is still on time
    assert batcher.estimated_wait_s(1) == pytest.approx(5 / 100)
    now[0] = 2.0
    assert batcher.lateness_s() == pytest.approx(2.0 - 0.08)
    assert batcher.estimated_wait_s(1) == pytest.approx(5 / 100 + 1.92)


def test_a_stall_of_one_image_admits_the_few_queued_behind_it() -> None:
    """The replica-stop case (batch cap 1, 7 images/s, a 5 s limit): a 2 s stall with 3 images
    queued is about 2.5 s of wait, admitted; a stall past the limit refuses at once, naming it."""
    now = [0.0]
    batcher: Batcher[int, int] = Batcher(
        doubler, 1, 0.0, max_pending=100, rate=measured(7), admit_within_s=5.0, clock=lambda: now[0]
    )
    batcher.reserve(3)
    now[0] = 2.0
    batcher.reserve(1)  # 4 ahead at 7/s (0.57 s) + 1.86 s late: admitted
    assert batcher.estimated_wait_s(1) == pytest.approx(5 / 7 + 2.0 - 1 / 7)
    now[0] = 6.0
    with pytest.raises(QueueFullError, match=r"in flight is 5\.86 s late") as refused:
        batcher.reserve(1)
    assert refused.value.wait_s == pytest.approx(5 / 7 + 6.0 - 1 / 7)


def test_a_reservation_grows_under_the_same_rules() -> None:
    batcher: Batcher[int, int] = Batcher(
        doubler, 8, 0.0, max_pending=100, rate=measured(10), admit_within_s=1.0, clock=lambda: 0
    )
    alone = batcher.reserve(1)
    alone.extend(14)  # nothing ahead of it: admitted, though it needs 1.5 s
    alone.release()
    first = batcher.reserve(1)
    slots = batcher.reserve(1)
    slots.extend(8)
    with pytest.raises(QueueFullError):
        slots.extend(1)  # 1 image of another request is ahead
    slots.release()
    first.release()
    assert batcher.pending == 0


def test_the_rate_follows_the_batches_weighted_by_their_time() -> None:
    rate = ServiceRate(1000.0, tau_s=1.0)
    rate.observe(10, 1.0)  # the first measurement replaces the warm-up rate
    assert rate.images_per_s == 10.0
    rate.observe(100, 1.0)  # 100 images/s for one tau: 63% of the way there
    assert rate.images_per_s == pytest.approx(10.0 + (1 - math.exp(-1.0)) * 90.0)
    for _ in range(20):
        rate.observe(100, 1.0)
    assert rate.images_per_s == pytest.approx(100.0, rel=1e-6)
    rate.observe(1, 0.001)  # 1,000 images/s, but over 1 ms: it moves the rate by 0.1% of that
    assert rate.images_per_s == pytest.approx(100.0 + (1 - math.exp(-0.001)) * 900.0)
    assert rate.wait_s(50) == pytest.approx(50 / rate.images_per_s)


def test_each_batch_is_reported_with_its_time_end_to_end() -> None:
    """On a fake clock: work comes in at t=10 to an idle queue, the forward pass moves the
    clock by 1.5 s; the batch took 1.5 s, and the next, queued behind it, 1.5 s more."""
    now = [10.0]
    reported: list[tuple[int, float]] = []

    def slow_doubler(payloads: list[int]) -> list[int]:
        now[0] += 1.5
        return doubler(payloads)

    rate = ServiceRate(100.0, tau_s=1.0)
    batcher: Batcher[int, int] = Batcher(
        slow_doubler,
        3,
        0.0,
        max_pending=100,
        on_batch=lambda size, seconds: reported.append((size, seconds)),
        close_when_idle=True,
        rate=rate,
        clock=lambda: now[0],
    )
    with batcher.reserve(6) as slots:
        futures = slots.submit([1, 2, 3, 4, 5, 6])  # two batches of 3, queued before the start
        batcher.start()
        try:
            assert [f.result(timeout=5) for f in futures] == [2, 4, 6, 8, 10, 12]
        finally:
            batcher.stop(timeout=5)
    assert reported == [(3, 1.5), (3, 1.5)]
    assert rate.images_per_s == 2.0  # 3 / 1.5, twice


def test_images_from_different_requests_share_a_batch_and_keep_their_order(
    make_batcher: Callable[..., Batcher[int, int]],
) -> None:
    sizes: list[int] = []
    batcher = make_batcher(max_batch_size=8, max_wait_s=0.2, on_batch=sizes)
    with batcher.reserve(2) as first, batcher.reserve(3) as second:
        futures_a = first.submit([1, 2])
        futures_b = second.submit([10, 20, 30])
        assert [f.result(timeout=5) for f in futures_a] == [2, 4]
        assert [f.result(timeout=5) for f in futures_b] == [20, 40, 60]
    assert sizes == [5]


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
    sizes: list[int] = []
    batcher = make_batcher(max_batch_size=8, max_wait_s=5.0, close_when_idle=True, on_batch=sizes)
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
    assert sizes == [1, 2]
