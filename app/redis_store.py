"""The heatmap store on Redis, shared by every replica (`VIRALIENCY_HEATMAP_STORE_URL`).

One key per image, `viraliency:heatmap:<image_id>`, holding one value written with one SET and
expired by Redis itself after heatmap_ttl_s (PX):

    b"VZM1" | width, height, map_h, map_w (4 x uint32, little-endian) | map (float32, h*w) | upload

The upload is kept as sent; an entry over heatmap_store_max_item_bytes is not kept. The bound
on the whole is Redis's own: `maxmemory` with `maxmemory-policy allkeys-lru` (README).

Faults never take scoring down: every call runs under heatmap_store_timeout_s; a failed or late
call reports itself (`on_failure`, a log line and a metric), and for the next retry_after_s the
store is treated as down without being asked (so a Redis that hangs costs one timeout per
second, not one per request). Then it is asked again: when Redis is back, the connection pool
reconnects and the store recovers without a restart.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import numpy as np
import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from app.settings import Settings
from app.store import StoredImage, StoreState, StoreUnavailableError

log = logging.getLogger(__name__)

MAGIC = b"VZM1"
HEADER = struct.Struct("<4sIIII")
KEY_PREFIX = "viraliency:heatmap:"
T = TypeVar("T")


def connect(url: str, timeout_s: float) -> redis.Redis:
    """A client with its own connection pool; one retry on a dropped connection (after a Redis
    restart the pooled sockets are dead: the retry reconnects), no retry on a timeout."""
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 1),
        max_connections=256,
    )


def pack(entry: StoredImage) -> bytes:
    viraliency = np.ascontiguousarray(entry.viraliency, dtype="<f4")  # (h, w)
    h, w = viraliency.shape
    header = HEADER.pack(MAGIC, entry.width, entry.height, h, w)
    return header + viraliency.tobytes() + entry.upload


def unpack(blob: bytes) -> StoredImage:
    magic, width, height, h, w = HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise ValueError(f"not a stored heatmap entry (magic {magic!r})")
    start = HEADER.size
    end = start + 4 * h * w
    viraliency = np.frombuffer(blob, "<f4", h * w, start).reshape(h, w).astype(np.float32)
    return StoredImage(blob[end:], viraliency, width, height)


class RedisStore:
    """`AsyncStore` on a Redis server; see the module docstring."""

    def __init__(self, settings: Settings, on_failure: Callable[[str], None]) -> None:
        assert settings.heatmap_store_url is not None
        self.ttl_ms = max(1, round(settings.heatmap_ttl_s * 1000))
        self.timeout_s = settings.heatmap_store_timeout_s
        self.max_item_bytes = settings.heatmap_store_max_item_bytes
        self.pause_s = max(1.0, float(settings.retry_after_s))
        self.client = connect(settings.heatmap_store_url, self.timeout_s)
        self._on_failure = on_failure
        self._down_until = 0.0
        self._items = 0  # keys in Redis's database, as of the last state()
        self._nbytes = 0  # Redis's used_memory, as of the last state()

    def __len__(self) -> int:
        return self._items

    @property
    def nbytes(self) -> int:
        return self._nbytes

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    async def _call(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        """call() within the timeout; StoreUnavailableError when down, late or failing."""
        if not self.available:
            raise StoreUnavailableError("the heatmap store is down (retrying after a pause)")
        try:
            async with asyncio.timeout(self.timeout_s):
                return await call()
        except (RedisError, OSError, TimeoutError) as exc:
            self._down_until = time.monotonic() + self.pause_s
            reason = type(exc).__name__
            log.warning(
                "heatmap store unavailable",
                extra={"event": "store_unavailable", "operation": operation, "reason": reason},
            )
            self._on_failure(operation)
            raise StoreUnavailableError(f"the heatmap store did not answer ({reason})") from None

    async def put(self, image_id: str, entry: StoredImage) -> bool:
        if entry.nbytes > self.max_item_bytes:
            return False
        blob = pack(entry)
        try:
            await self._call(
                "put", lambda: self.client.set(KEY_PREFIX + image_id, blob, px=self.ttl_ms)
            )
        except StoreUnavailableError:
            return False
        return True

    async def get(self, image_id: str) -> StoredImage | None:
        blob = await self._call("get", lambda: self.client.get(KEY_PREFIX + image_id))
        if blob is None:
            return None
        assert isinstance(blob, bytes)  # the client does not decode responses
        return unpack(blob)

    async def contains(self, image_id: str) -> bool:
        found = await self._call("contains", lambda: self.client.exists(KEY_PREFIX + image_id))
        return bool(found)

    async def state(self) -> StoreState:
        """Asks Redis even during a pause (probes are rare), and refreshes len() and nbytes."""
        self._down_until = 0.0
        try:
            items, memory = await self._call("state", self._sizes)
        except StoreUnavailableError:
            return "redis_unavailable"
        self._items, self._nbytes = items, memory
        return "redis"

    async def _sizes(self) -> tuple[int, int]:
        items = await self.client.dbsize()
        memory = await self.client.info("memory")
        return int(items), int(memory["used_memory"])

    async def close(self) -> None:
        await self.client.aclose()
