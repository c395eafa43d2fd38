"""A byte budget for the upload bytes that admitted requests hold in memory.

Each request takes a `Hold` and adds to it as its body's chunks arrive; once the budget's total
would pass `limit`, `take` raises `BudgetExceededError` (the request gets 503 like a full
queue) and the bytes already held by that request go back when its hold is released.
"""

from __future__ import annotations

import threading
from types import TracebackType


class BudgetExceededError(Exception):
    """Taking these bytes would pass the budget."""


class ByteBudget:
    """Counts bytes held by all requests together; `hold()` gives one request's share."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._lock = threading.Lock()

    def hold(self) -> Hold:
        return Hold(self)

    def _take(self, count: int) -> None:
        with self._lock:
            if self.held + count > self.limit:
                raise BudgetExceededError(
                    f"{self.held} upload bytes are held by admitted requests; {count} more "
                    f"would pass the budget of {self.limit}"
                )
            self.held += count

    def _give_back(self, count: int) -> None:
        with self._lock:
            self.held -= count


class Hold:
    """One request's bytes in a `ByteBudget`; all go back on `release` (or `with` exit)."""

    def __init__(self, budget: ByteBudget) -> None:
        self._budget = budget
        self.nbytes = 0

    def take(self, count: int) -> None:
        self._budget._take(count)
        self.nbytes += count

    def release(self) -> None:
        self._budget._give_back(self.nbytes)
        self.nbytes = 0

    def __enter__(self) -> Hold:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
