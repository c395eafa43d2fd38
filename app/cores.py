"""How many cores the CPU forward pass takes while uploads are still being decoded.

On the CPU the decoding threads and the forward pass's OpenMP team share the cores. When a
decoding thread runs on a team thread's core, every parallel region of the forward pass
waits at its barrier for the thread that lost its core, while the other team threads spin:
on 2 cores, with eight 12 MP photos to decode, the inference process burned 1.35-1.5 CPU
seconds per request on a forward pass that needs 0.65 alone, and decoding stretched with it
(bench/RESULTS.md, "Decode cost by photo size"). So the service tracks how much decoding
is still ahead (`DecodeBacklog`), and a batch that starts while that backlog would keep the
decoding threads busy for longer than the batch itself runs with their cores left to them
(`cores_to_yield`): fewer torch threads for that batch, the full team again once the
backlog is gone. Small uploads (a 640x480 JPEG decodes in ~2 ms, a 448 px forward pass takes
~45 ms an image here) never reach that, so their batches keep every thread.
"""

from __future__ import annotations

import threading

# Seconds to decode one byte of upload before any is measured: a 3.4 MB 12 MP JPEG decodes
# (at half scale) and squashes in ~60 ms on this project's 2-core CI machine, a 640x480 one of
# 87 kB in ~1.6 ms; both ~18 ns per byte.
INITIAL_SECONDS_PER_BYTE = 18e-9


class DecodeJob:
    """One upload handed to the decoding threads; `done` takes it off the backlog (once)."""

    def __init__(self, backlog: DecodeBacklog, nbytes: int) -> None:
        self._backlog = backlog
        self.nbytes = nbytes
        self.finished = False

    def done(self, seconds: float | None = None) -> None:
        """Decoded in `seconds` (folded into the estimate), or None: failed or never run."""
        self._backlog._finish(self, seconds)


class DecodeBacklog:
    """Bytes queued for or being decoded, and the seconds the decoding threads need for them
    at the measured cost per byte (an exponentially weighted mean of each decode's). Safe
    from any thread: the event loop queues jobs, the decoding threads finish them, the
    batcher's thread reads `seconds`."""

    def __init__(
        self,
        threads: int,
        seconds_per_byte: float = INITIAL_SECONDS_PER_BYTE,
        weight: float = 0.2,
    ) -> None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self.threads = threads
        self.seconds_per_byte = seconds_per_byte
        self.weight = weight
        self.pending_bytes = 0
        self._lock = threading.Lock()

    def queued(self, nbytes: int) -> DecodeJob:
        with self._lock:
            self.pending_bytes += nbytes
        return DecodeJob(self, nbytes)

    def _finish(self, job: DecodeJob, seconds: float | None) -> None:
        with self._lock:
            if job.finished:
                return
            job.finished = True
            self.pending_bytes -= job.nbytes
            if seconds is not None and seconds > 0 and job.nbytes > 0:
                self.seconds_per_byte += self.weight * (
                    seconds / job.nbytes - self.seconds_per_byte
                )

    @property
    def seconds(self) -> float:
        """Wall seconds until the decoding threads have decoded everything queued."""
        return self.pending_bytes * self.seconds_per_byte / self.threads


def cores_to_yield(backlog_s: float, batch_s: float, decode_threads: int) -> int:
    """How many torch threads a batch expected to take `batch_s` gives up to decoding: one
    per decoding thread when the backlog outlasts the batch, else none."""
    return decode_threads if backlog_s > batch_s else 0
