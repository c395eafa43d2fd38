"""Per-client rate limits (`VIRALIENCY_RATE_LIMIT` images/s, `VIRALIENCY_RATE_LIMIT_BURST`).

A token bucket per client (its API key's id, or its address without keys): it holds at most
`burst` tokens and refills at `rate` tokens/s,

    tokens(t) = min(burst, tokens(t0) + rate * (t - t0))

and a request costs one token per image it sends (one for a request without files). It passes
when tokens >= min(cost, burst), then pays the whole cost (the bucket may go negative, so a
request larger than the burst waits for a full bucket and then delays the next ones); else 429
with Retry-After = ceil((min(cost, burst) - tokens) / rate).

With the shared store configured the buckets live in that Redis, updated by one Lua script
(atomic, on Redis's own clock), so the limit holds across replicas; if Redis fails, this
replica falls back to its own buckets until Redis answers again.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from fastapi import Request
from starlette.datastructures import UploadFile

from app.errors import ApiError
from app.settings import Settings

log = logging.getLogger(__name__)

MAX_CLIENTS = 100_000  # in-memory buckets kept, least recently used dropped first
KEY_PREFIX = "viraliency:ratelimit:"

# KEYS[1] the bucket; ARGV rate, burst, cost. Returns the wait in seconds ("0": admitted).
TAKE = """
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local need = math.min(cost, burst)
if tokens < need then
  return tostring((need - tokens) / rate)
end
tokens = tokens - cost
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return '0'
"""


class Limiter(Protocol):
    async def take(self, client: str, cost: int) -> float:
        """0 when admitted (and charged), else the seconds to wait (nothing is charged)."""
        ...

    async def close(self) -> None: ...


class MemoryBuckets:
    """This process's buckets (one replica, or the fallback when Redis fails)."""

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    async def take(self, client: str, cost: int) -> float:
        now = self._clock()
        tokens, at = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        need = min(cost, self.burst)
        if tokens < need:
            self._buckets[client] = (tokens, now)
            return (need - tokens) / self.rate
        self._buckets[client] = (tokens - cost, now)
        if len(self._buckets) > MAX_CLIENTS:
            self._buckets.popitem(last=False)
        return 0.0

    async def close(self) -> None:
        return None


class RedisBuckets:
    """Buckets in Redis, shared by every replica; this replica's own while Redis fails."""

    def __init__(self, settings: Settings, rate: float) -> None:
        from app.redis_store import connect  # the redis client only when it is used

        assert settings.heatmap_store_url is not None
        self.rate = rate
        self.burst = settings.rate_limit_burst
        self.timeout_s = settings.heatmap_store_timeout_s
        self.client = connect(settings.heatmap_store_url, self.timeout_s)
        self.script = self.client.register_script(TAKE)
        self.fallback = MemoryBuckets(rate, self.burst)

    async def take(self, client: str, cost: int) -> float:
        from redis.exceptions import RedisError

        try:
            async with asyncio.timeout(self.timeout_s):
                wait = await self.script(
                    keys=[KEY_PREFIX + client], args=[self.rate, self.burst, cost]
                )
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning(
                "rate limit counted in this replica: Redis failed",
                extra={"event": "ratelimit_fallback", "reason": type(exc).__name__},
            )
            return await self.fallback.take(client, cost)
        return float(wait)

    async def close(self) -> None:
        await self.client.aclose()


def open_limiter(settings: Settings) -> Limiter | None:
    if settings.rate_limit is None:
        return None
    if settings.heatmap_store_url is None:
        return MemoryBuckets(settings.rate_limit, settings.rate_limit_burst)
    return RedisBuckets(settings, settings.rate_limit)


async def images_in(request: Request) -> int:
    """A request's cost: its uploaded files (already parsed by UploadRoute), at least 1."""
    if "multipart/form-data" not in request.headers.get("content-type", ""):
        return 1
    form = await request.form()
    return max(1, sum(isinstance(value, UploadFile) for _, value in form.multi_items()))


async def rate_limited(request: Request) -> None:
    """Route dependency: charge the client's bucket; 429 with Retry-After when it is empty."""
    limiter: Limiter | None = getattr(request.app.state, "limiter", None)
    if limiter is None:
        return
    client = getattr(request.state, "client_id", "addr:unknown")
    cost = await images_in(request)
    wait = await limiter.take(client, cost)
    if wait > 0:
        settings: Settings = request.app.state.settings
        raise ApiError(
            429,
            "rate_limited",
            f"over the rate limit of {settings.rate_limit:g} images/s (bursts of "
            f"{settings.rate_limit_burst:g}); this request has {cost} image(s): retry in "
            f"{wait:.2f} s",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )
