"""The in-process heatmap store keeps what it counts: each map alone, not its batch's array."""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np

from app.store import HeatmapStore, StoredImage

BATCH, H, W = 64, 7, 7  # a batch's (B, h, w) maps, as Engine.predict slices them


def test_a_kept_map_owns_its_memory_not_the_batchs() -> None:
    maps = np.random.default_rng(0).random((BATCH, H, W), dtype=np.float32)
    store = HeatmapStore(max_items=10, max_bytes=10_000, ttl_s=60)
    assert store.put("a", StoredImage(b"photo", maps[3], 10, 10))
    kept = store.get("a")
    assert kept is not None
    assert kept.viraliency.base is None  # a view would keep all 64 maps alive
    np.testing.assert_array_equal(kept.viraliency, maps[3])
    maps[3] = 0  # the batch's array is reused or changed: the kept map is not
    assert kept.viraliency.any()


def test_the_store_retains_about_the_bytes_it_counts() -> None:
    """1,000 entries, each sliced from its own batch of 64 maps: what stays allocated after the
    batches are gone is near the store's own count (196 B a map), not 1,000 x 12.5 KB."""
    store = HeatmapStore(max_items=10_000, max_bytes=2**30, ttl_s=60)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(1000):
            maps = np.full((BATCH, H, W), i, np.float32)  # (B, h, w), 12,544 B
            store.put(f"{i:064x}", StoredImage(b"", maps[i % BATCH], 10, 10))
            del maps
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert store.nbytes == 1000 * H * W * 4
    # Each entry also costs Python objects (dataclass, array header, dict slot): < 1 KB.
    assert retained < 1000 * (H * W * 4 + 1024), retained
