"""Recently scored images, kept for GET /heatmap and GET /regions: bounded in count, bytes, time.

An entry keeps the upload's own bytes (already compressed; decoding them again when a heatmap is
asked for costs milliseconds) and the small eq. (7) map, never the decoded pixels, which for a
12-megapixel photo would be 36 MB. Two stores answer the same async API (`AsyncStore`):

- `MemoryStore` (the default): this process's memory, a `HeatmapStore` bounded in count and
  bytes; oldest entries go first when a bound is reached. Used only from the event loop.
- `app.redis_store.RedisStore` (`VIRALIENCY_HEATMAP_STORE_URL=redis://...`): one Redis shared by
  every replica, so any replica answers for an image another one scored.

`app.stores.open_store` picks one from the settings. A store that cannot be reached says so:
`put` answers False (the image is scored, not kept) and `get` raises `StoreUnavailableError`
(503).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal, Protocol

import numpy as np

from app.engine import ViraliencyMap
from app.settings import Settings

StoreState = Literal["memory", "redis", "redis_unavailable"]


class StoreUnavailableError(Exception):
    """The shared store did not answer (down, slow or refusing) within its timeout."""


@dataclass(frozen=True)
class StoredImage:
    upload: bytes
    viraliency: ViraliencyMap  # (h, w)
    width: int
    height: int

    @property
    def nbytes(self) -> int:
        return len(self.upload) + self.viraliency.nbytes


def owned(entry: StoredImage) -> StoredImage:
    """The entry with a map that owns its memory: a map sliced from a batch's (B, h, w) array
    is a view that would keep the whole batch alive (~12 KB at B = 64, not its own 196 B)."""
    if entry.viraliency.base is None:
        return entry
    return replace(entry, viraliency=np.array(entry.viraliency, copy=True))


class HeatmapStore:
    """The in-process bound: at most max_items entries and max_bytes bytes, each for ttl_s."""

    def __init__(
        self,
        max_items: int,
        max_bytes: int,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
        max_item_bytes: int | None = None,
    ) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.max_item_bytes = (
            max_bytes if max_item_bytes is None else min(max_item_bytes, max_bytes)
        )
        self.ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, StoredImage]] = OrderedDict()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, image_id: str, entry: StoredImage) -> bool:
        """Keep an entry (refreshing its time to live); False if it alone exceeds max_item_bytes
        (at most max_bytes)."""
        self._drop(image_id)
        if entry.nbytes > self.max_item_bytes:
            return False
        entry = owned(entry)
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


class AsyncStore(Protocol):
    """What the service needs from a store; `len()` and `nbytes` feed the metrics (for Redis:
    as of the last `state()` call)."""

    @property
    def nbytes(self) -> int: ...

    def __len__(self) -> int: ...

    async def put(self, image_id: str, entry: StoredImage) -> bool:
        """Keep an entry for ttl_s; False when it is too big or the store is unavailable."""
        ...

    async def get(self, image_id: str) -> StoredImage | None:
        """The entry, None when unknown or expired; StoreUnavailableError when unreachable."""
        ...

    async def contains(self, image_id: str) -> bool: ...

    async def state(self) -> StoreState: ...

    async def close(self) -> None: ...


class MemoryStore:
    """`HeatmapStore` behind the async API (every call completes at once)."""

    def __init__(self, settings: Settings) -> None:
        self.bounded = HeatmapStore(
            settings.heatmap_store_max_items,
            settings.heatmap_store_max_bytes,
            settings.heatmap_ttl_s,
            max_item_bytes=settings.heatmap_store_max_item_bytes,
        )

    def __len__(self) -> int:
        return len(self.bounded)

    @property
    def nbytes(self) -> int:
        return self.bounded.nbytes

    async def put(self, image_id: str, entry: StoredImage) -> bool:
        return self.bounded.put(image_id, entry)

    async def get(self, image_id: str) -> StoredImage | None:
        return self.bounded.get(image_id)

    async def contains(self, image_id: str) -> bool:
        return self.bounded.get(image_id) is not None

    async def state(self) -> StoreState:
        return "memory"

    async def close(self) -> None:
        return None
