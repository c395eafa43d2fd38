"""Dynamic batching: one worker thread per device turns single images into batches.

    submit -> queue -> collect_batch -> predict -> results, in each job's own future

A batch closes at `max_batch_size` images or `max_wait_s` after its first image (a monotonic
deadline), whichever comes first, so images from concurrent requests share a forward pass.
Admission is bounded twice: a `Reservation` holds slots for a request's images from before they
are decoded until each is scored, and `reserve` refuses at once (QueueFullError) when the slots
are gone (a hard ceiling) or when, at the live `ServiceRate` and with the batch in flight's
lateness added (`lateness_s`), the images ahead of the request and its own would not be scored
within `admit_within_s` (the deadline, less a margin). A slot is
released before its result is delivered, so a caller that reserves again as soon as it has its
answer finds the slot free. A batch
that fails (CUDA out of memory, or any error) is split in halves and retried, down to single
images, so one bad image fails only its own request. Nothing here knows about HTTP or torch
models: `predict` is any function from a list of payloads to a list of results.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from types import TracebackType
from typing import Generic, Protocol, TypeVar

import torch

from app.rate import ServiceRate

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


Clock = Callable[[], float]  # monotonic seconds


class QueueFullError(Exception):
    """No room for the images of this request: the slots are gone, or they would wait too long.

    `wait_s` is the estimated wait with them admitted and `limit_s` the most allowed (both None
    when the hard slot ceiling refused them).
    """

    def __init__(self, message: str, wait_s: float | None = None, limit_s: float | None = None):
        super().__init__(message)
        self.wait_s = wait_s
        self.limit_s = limit_s


class ShuttingDownError(Exception):
    """The batcher no longer admits new work."""


@dataclass(eq=False)
class Job(Generic[T, R]):
    payload: T
    future: Future[R] = field(default_factory=Future)


Item = TypeVar("Item")


class JobSource(Protocol[Item]):
    """What batch collection needs of a queue (queue.SimpleQueue has it; tests script one)."""

    def get(self, block: bool = True, timeout: float | None = None) -> Item: ...

    def get_nowait(self) -> Item: ...

    def put(self, item: Item, block: bool = True, timeout: float | None = None) -> None: ...

    def empty(self) -> bool: ...


JobQueue = queue.SimpleQueue[Job[T, R] | None]  # None asks the worker to stop


def collect_batch(
    jobs: JobSource[Job[T, R] | None],
    max_size: int,
    max_wait_s: float,
    nothing_coming: Callable[[int], bool] | None = None,
    clock: Clock = time.monotonic,
) -> list[Job[T, R]]:
    """Block for a first job, then take more until `max_size` or the monotonic deadline
    clock() + max_wait_s set when the first job arrived.

    With `nothing_coming`, the batch also closes as soon as the queue is empty and
    `nothing_coming(len(batch))` says no other admitted image is on its way, so a lone request
    does not wait out the deadline. Returns [] when the stop sentinel comes first; a sentinel
    met later is put back, so the batch in hand is still run and the worker stops next call.
    """
    first = jobs.get()
    if first is None:
        return []
    batch = [first]
    deadline = clock() + max_wait_s
    while len(batch) < max_size:
        if nothing_coming is not None and jobs.empty() and nothing_coming(len(batch)):
            break
        remaining = deadline - clock()
        try:
            job = jobs.get(timeout=remaining) if remaining > 0 else jobs.get_nowait()
        except queue.Empty:
            break
        if job is None:
            jobs.put(None)
            break
        batch.append(job)
    return batch


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError)


class Reservation(Generic[T, R]):
    """Slots for one request's images; unused slots go back on `release` (or `with` exit)."""

    def __init__(self, batcher: Batcher[T, R], count: int) -> None:
        self._batcher = batcher
        self._unsubmitted = count

    def submit(self, payloads: Sequence[T]) -> list[Future[R]]:
        """Queue the payloads, in order; each result arrives in its own future."""
        if len(payloads) > self._unsubmitted:
            raise ValueError(f"{len(payloads)} payloads for {self._unsubmitted} reserved slots")
        self._unsubmitted -= len(payloads)
        return self._batcher._enqueue(payloads)

    def extend(self, count: int) -> None:
        """Reserve `count` more slots, under the same rules as `Batcher.reserve`."""
        self._batcher._admit(count, own=self._unsubmitted)
        self._unsubmitted += count

    def release(self) -> None:
        self._batcher._release(self._unsubmitted)
        self._unsubmitted = 0

    def __enter__(self) -> Reservation[T, R]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class Batcher(Generic[T, R]):
    """A bounded queue drained in batches by one worker thread that calls `predict`."""

    def __init__(
        self,
        predict: Callable[[list[T]], Sequence[R]],
        max_batch_size: int,
        max_wait_s: float,
        max_pending: int,
        on_batch: Callable[[int, float], None] | None = None,
        name: str = "batcher",
        close_when_idle: bool = False,
        rate: ServiceRate | None = None,
        admit_within_s: float | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        """`on_batch(images, seconds)` is called after each batch that ran (seconds: end to end,
        see `_observe`); with `rate` and
        `admit_within_s`, a request is admitted only when `rate` says its images are scored
        within that many seconds (or the queue is empty: the best it can ever get)."""
        self._predict = predict
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_pending = max_pending
        self._on_batch = on_batch
        self.close_when_idle = close_when_idle
        self.rate = rate
        self.admit_within_s = admit_within_s
        self._clock = clock
        self._jobs: JobQueue[T, R] = queue.SimpleQueue()
        self._pending = 0  # reserved slots: images admitted and not yet scored
        self._busy_since = 0.0  # when pending last went from 0 to more
        self._last_end = 0.0  # when the last batch ended
        self._accepting = True
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)

    @property
    def pending(self) -> int:
        return self._pending

    @property
    def accepting(self) -> bool:
        return self._accepting and self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def check(self, count: int) -> None:
        """Raise what `reserve(count)` would raise now, without reserving anything."""
        with self._changed:
            self._check(count)

    def reserve(self, count: int) -> Reservation[T, R]:
        """Admit `count` images or refuse at once (QueueFullError, ShuttingDownError)."""
        self._admit(count)
        return Reservation(self, count)

    def estimated_wait_s(self, count: int = 1) -> float | None:
        """Seconds until `count` more images would be scored now (None without a rate): the
        images admitted and these at the measured rate, plus `lateness_s` of the batch in
        flight."""
        return None if self.rate is None else self._wait_s(self._pending + count)

    def _wait_s(self, ahead: int) -> float:
        assert self.rate is not None
        return ahead / self.rate.images_per_s + self.lateness_s()

    def _admit(self, count: int, own: int = 0) -> None:
        """`own`: slots the same request already holds (they are not work ahead of it)."""
        with self._changed:
            self._check(count, own)
            if self._pending == 0:
                self._busy_since = self._clock()
            self._pending += count

    def _check(self, count: int, own: int = 0) -> None:
        if not self._accepting:
            raise ShuttingDownError("the service is shutting down")
        if self._pending + count > self.max_pending:
            raise QueueFullError(
                f"{self._pending} images are queued; {count} more would exceed "
                f"the bound of {self.max_pending}"
            )
        if self.rate is None or self.admit_within_s is None or self._pending == own:
            return  # nothing ahead of it: waiting could never make it sooner
        if self.rate.batches == 0 and self._pending + count > self.max_batch_size:
            # Slow start: until one batch has been measured, the warm-up rate (the forward
            # pass alone, on an idle machine) is all we know; admit one batch's worth.
            raise QueueFullError(
                f"{self._pending} images are queued and the service rate is not measured "
                f"yet; {count} more would pass one batch ({self.max_batch_size}) at start-up",
                wait_s=self.rate.wait_s(self._pending + count) + self.admit_within_s,
                limit_s=self.admit_within_s,
            )
        wait = self._wait_s(self._pending + count)
        if wait > self.admit_within_s:
            late = self.lateness_s()
            stalled = f" and the batch in flight is {late:.2f} s late" if late > 0 else ""
            raise QueueFullError(
                f"{self._pending} images are queued; at {self.rate.images_per_s:.1f} images/s"
                f"{stalled}, {count} more would be scored in about {wait:.2f} s, over the "
                f"{self.admit_within_s:.2f} s admission limit",
                wait_s=wait,
                limit_s=self.admit_within_s,
            )

    def close(self) -> None:
        """Admit nothing new; work already reserved is still scored."""
        with self._changed:
            self._accepting = False

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every admitted image has been scored; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: self._pending == 0, timeout)

    def stop(self, timeout: float | None = None) -> bool:
        """close -> drain -> stop the worker. True when everything admitted was scored."""
        self.close()
        drained = self.drain(timeout)
        self._jobs.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)
        return drained

    def _enqueue(self, payloads: Sequence[T]) -> list[Future[R]]:
        jobs: list[Job[T, R]] = [Job(payload) for payload in payloads]
        for job in jobs:
            self._jobs.put(job)
        return [job.future for job in jobs]

    def _release(self, count: int) -> None:
        if count:
            with self._changed:
                self._pending -= count
                self._changed.notify_all()

    def current_rate(self) -> float:
        """The measured images/s (the rate estimate; 0 without one)."""
        return 0.0 if self.rate is None else self.rate.images_per_s

    def lateness_s(self) -> float:
        """How far the batch in flight has run past what the rate allows a full batch
        (max_batch_size / rate) since work last moved; 0 when idle or on time. A batch that
        is L late is taken to need about L more, so a stall shows in the wait at once, not only
        after its batch ends, and one that outlasts the admission limit refuses everything.
        Added once, not per queued image: the last rule (the rate capped at
        max_batch_size / elapsed) made a 2 s stall of a 1-image batch look like 6 s for three
        queued images, and a replica refused while its neighbour on the same host stopped
        (bench/RESULTS.md)."""
        if self.rate is None or self._pending == 0:
            return 0.0
        elapsed = self._clock() - max(self._last_end, self._busy_since)
        return max(0.0, elapsed - self.max_batch_size / self.rate.images_per_s)

    def _work(self) -> None:
        while True:
            batch = collect_batch(
                self._jobs,
                self.max_batch_size,
                self.max_wait_s,
                self._nothing_coming if self.close_when_idle else None,
                self._clock,
            )
            if not batch:
                return
            # A request that gave up (deadline) cancelled its futures: skip those images.
            live = [job for job in batch if job.future.set_running_or_notify_cancel()]
            self._release(len(batch) - len(live))
            if live:
                self._run(live)

    def _observe(self, images: int) -> None:
        """Report the batch, and fold into the rate the wall time it took *end to end*: since
        the previous batch ended, or since work came in when there was none. So the rate is
        what the whole path delivers (uploads, decoding and the forward pass sharing the
        machine), not the forward pass alone, and an idle queue does not count against it."""
        end = self._clock()
        seconds = end - max(self._last_end, self._busy_since)
        self._last_end = end
        if self.rate is not None:
            self.rate.observe(images, seconds)
        if self._on_batch is not None:
            self._on_batch(images, seconds)

    def _nothing_coming(self, collected: int) -> bool:
        # Every earlier batch is finished, so pending = this batch + queued + still decoding.
        return self._pending <= collected

    def _run(self, jobs: list[Job[T, R]], observe: bool = True) -> None:
        """Predict one batch and deliver its results. The batch is observed (metrics, rate)
        before any result is delivered, so whoever reads the metrics once answered sees it; a
        failed batch is observed once, as collected, not again as the halves it is retried in."""
        try:
            results = self._predict([job.payload for job in jobs])
            if len(results) != len(jobs):
                raise RuntimeError(f"predict returned {len(results)} results for {len(jobs)}")
        except Exception as exc:
            if observe:
                self._observe(len(jobs))
            self._recover(jobs, exc)
            return
        if observe:
            self._observe(len(jobs))
        for job, result in zip(jobs, results, strict=True):
            self._release(1)  # first: whoever waits on the result may reserve again at once
            job.future.set_result(result)

    def _recover(self, jobs: list[Job[T, R]], exc: Exception) -> None:
        if len(jobs) == 1:
            if not is_out_of_memory(exc):
                log.error("predict failed on one image", exc_info=exc)
            self._release(1)
            jobs[0].future.set_exception(exc)
            return
        if is_out_of_memory(exc):
            log.warning("out of memory on a batch of %d; splitting it", len(jobs))
            torch.cuda.empty_cache()
        else:
            log.warning("batch of %d failed (%r); retrying in halves", len(jobs), exc)
        half = len(jobs) // 2
        self._run(jobs[:half], observe=False)
        self._run(jobs[half:], observe=False)
