"""A live estimate of how fast one device scores images, and of the wait ahead of a request.

Each finished batch of b images is one sample of the throughput b / t, where t is the wall time
it took end to end: since the previous batch ended, or since work came in to an idle queue
(`app.batching.Batcher`). Under load that is what the whole path delivers (uploads, decoding
and the forward pass sharing the machine), not the forward pass alone. The estimate is an
exponentially weighted mean over that time, not over batches:

    rate <- (1 - w) * rate + w * (b / t),    w = 1 - exp(-t / tau)

so a long batch counts for more than a short one, and the estimate follows the last ~tau
seconds of work whatever the batch sizes. Before the first batch (cold start) it is the rate
measured at warm-up; the first batch's sample replaces it (w = 1). The wait of a request
whose images would have `ahead` images before them (its own included) is ahead / rate.
"""

from __future__ import annotations

import math
import threading


class ServiceRate:
    """Images per second, as an EWMA over busy time; safe to read and update from any thread."""

    def __init__(self, initial: float, tau_s: float = 2.0) -> None:
        if not initial > 0:
            raise ValueError(f"the initial rate must be positive, got {initial}")
        self._rate = initial
        self.tau_s = tau_s
        self.batches = 0
        self._lock = threading.Lock()

    @property
    def images_per_s(self) -> float:
        return self._rate

    def observe(self, images: int, seconds: float) -> None:
        """Fold in one batch of `images` that took `seconds` on the device."""
        if images <= 0 or seconds <= 0:
            return
        # The first measurement replaces the warm-up rate: that was the forward pass alone.
        weight = 1.0 if self.batches == 0 else 1.0 - math.exp(-seconds / self.tau_s)
        with self._lock:
            self._rate += weight * (images / seconds - self._rate)
            self.batches += 1

    def wait_s(self, ahead: int) -> float:
        """Seconds until `ahead` more images are scored at the current rate."""
        return ahead / self._rate
