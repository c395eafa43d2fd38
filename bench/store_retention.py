"""Bytes the in-process heatmap store keeps alive vs the bytes it counts (issue 13's defect).

    python bench/store_retention.py          # from the repository root

1,000 entries, each map sliced from its own batch of 64 (h, w) = (7, 7) maps as Engine.predict
returns them; the batches are dropped; tracemalloc measures what is still allocated.
"""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np

from app.store import HeatmapStore, StoredImage

ENTRIES, BATCH, H, W = 1000, 64, 7, 7


def main() -> None:
    store = HeatmapStore(max_items=10 * ENTRIES, max_bytes=2**30, ttl_s=60)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(ENTRIES):
        maps = np.full((BATCH, H, W), i, np.float32)  # (B, h, w)
        store.put(f"{i:064x}", StoredImage(b"", maps[i % BATCH], 10, 10))
        del maps
    gc.collect()
    retained = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    print(f"{ENTRIES} entries: counted {store.nbytes:,} B, retained {retained:,} B")


if __name__ == "__main__":
    main()
