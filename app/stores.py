"""Which heatmap store the settings name: this process's memory, or a shared Redis."""

from __future__ import annotations

from collections.abc import Callable

from app.settings import Settings
from app.store import AsyncStore, MemoryStore


def open_store(settings: Settings, on_failure: Callable[[str], None]) -> AsyncStore:
    """The store the settings name; on_failure(operation) is called for each failed call."""
    if settings.heatmap_store_url is None:
        return MemoryStore(settings)
    from app.redis_store import RedisStore  # the redis client only when it is used

    return RedisStore(settings, on_failure)
