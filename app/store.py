"""Recently scored images, kept for GET /heatmap and GET /regions: bounded in count, bytes, time.

An entry keeps the upload's own bytes (already compressed; decoding them again when a heatmap is
asked for costs milliseconds) and the small eq. (7) map, never the decoded pixels, which for a
12-megapixel photo would be 36 MB. Oldest entries go first when a bound is reached. Used only
from the event loop, so it needs no lock.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from app.engine import ViraliencyMap


@dataclass(frozen=True)
class StoredImage:
    upload: bytes
    viraliency: ViraliencyMap  # (h, w)
    width: int
    height: int

    @property
    def nbytes(self) -> int:
        return len(self.upload) + self.viraliency.nbytes


class HeatmapStore:
    def __init__(
        self,
        max_items: int,
        max_bytes: int,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, StoredImage]] = OrderedDict()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, image_id: str, entry: StoredImage) -> bool:
        """Keep an entry (refreshing its time to live); False if it alone exceeds max_bytes."""
        self._drop(image_id)
        if entry.nbytes > self.max_bytes:
            return False
        self._expire()
        while self._entries and (
            len(self._entries) >= self.max_items or self.nbytes + entry.nbytes > self.max_bytes
        ):
            self._drop(next(iter(self._entries)))
        self._entries[image_id] = (self._clock() + self.ttl_s, entry)
        self.nbytes += entry.nbytes
        return True

    def get(self, image_id: str) -> StoredImage | None:
        found = self._entries.get(image_id)
        if found is None:
            return None
        expires, entry = found
        if self._clock() >= expires:
            self._drop(image_id)
            return None
        return entry

    def _drop(self, image_id: str) -> None:
        found = self._entries.pop(image_id, None)
        if found is not None:
            self.nbytes -= found[1].nbytes

    def _expire(self) -> None:
        now = self._clock()
        while self._entries:  # insertion order is expiry order: every entry has the same TTL
            image_id, (expires, _) = next(iter(self._entries.items()))
            if now < expires:
                return
            self._drop(image_id)
