"""The pure parts: heatmap rendering, salient regions, the bounded store."""

from __future__ import annotations

import numpy as np
import pytest

from app.heatmap import render, to_unit_range, upsample
from app.regions import salient_regions
from app.store import HeatmapStore, StoredImage


def test_upsample_keeps_a_constant_map_constant_and_takes_the_image_size() -> None:
    up = upsample(np.full((7, 7), 0.25, np.float32), 123, 45)
    assert up.shape == (45, 123)
    np.testing.assert_allclose(up, 0.25)


def test_unit_range_spans_0_to_255_and_a_flat_map_is_zero() -> None:
    scaled = to_unit_range(np.array([[-2.0, 0.0], [1.0, 2.0]], np.float32))
    assert (scaled.min(), scaled.max()) == (0, 255)
    assert scaled[0, 1] == 128  # 0 lies half way between -2 and 2
    assert not to_unit_range(np.ones((3, 3), np.float32)).any()


def test_render_refuses_a_photo_of_another_size() -> None:
    with pytest.raises(ValueError, match="expected 10x10"):
        render(np.zeros((2, 2), np.float32), 10, 10, photo=np.zeros((5, 5, 3), np.uint8))


def test_regions_find_each_hot_spot_where_it_is() -> None:
    amap = np.zeros((8, 8), np.float32)
    amap[1, 1] = 1.0  # cell centre at (15, 15) in an 80 x 80 image
    amap[6, 5] = 0.5  # cell centre at (55, 65)
    regions = salient_regions(amap, 80, 80, fraction=0.2)
    assert len(regions) == 2
    strong, weak = regions
    assert strong.peak > weak.peak > 0
    for region, (cx, cy) in [(strong, (15, 15)), (weak, (55, 65))]:
        assert region.x <= cx < region.x + region.width
        assert region.y <= cy < region.y + region.height
        assert region.width < 40
        assert region.height < 40
    assert strong.x + strong.width <= weak.x


def test_regions_of_a_map_with_nothing_positive_are_empty() -> None:
    assert salient_regions(-np.ones((7, 7), np.float32), 50, 50) == []


def test_regions_of_a_large_image_come_back_in_its_own_pixels() -> None:
    amap = np.zeros((7, 7), np.float32)
    amap[3, 3] = 1.0
    (region,) = salient_regions(amap, 7000, 3500)
    assert region.x <= 3500 < region.x + region.width
    assert region.y <= 1750 < region.y + region.height
    assert region.x + region.width <= 7000
    assert region.y + region.height <= 3500


def entry(upload_bytes: int) -> StoredImage:
    return StoredImage(bytes(upload_bytes), np.zeros((2, 2), np.float32), 10, 10)  # map: 16 B


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_store_evicts_the_oldest_beyond_max_bytes() -> None:
    store = HeatmapStore(max_items=100, max_bytes=250, ttl_s=60)
    for name in "abc":
        assert store.put(name, entry(84))  # 100 bytes each
    assert [store.get(n) is not None for n in "abc"] == [False, True, True]
    assert store.nbytes == 200


def test_store_refuses_an_entry_larger_than_its_budget() -> None:
    store = HeatmapStore(max_items=100, max_bytes=50, ttl_s=60)
    assert not store.put("big", entry(100))
    assert len(store) == 0
    assert store.nbytes == 0


def test_store_entries_expire_and_putting_again_refreshes_them() -> None:
    clock = Clock()
    store = HeatmapStore(max_items=10, max_bytes=10_000, ttl_s=10, clock=clock)
    store.put("a", entry(10))
    clock.now = 5
    store.put("b", entry(10))
    clock.now = 8
    store.put("a", entry(10))  # scored again: a fresh time to live, to 18
    clock.now = 12
    assert store.get("a") is not None
    assert store.get("b") is not None
    clock.now = 15.5
    assert store.get("b") is None
    assert store.get("a") is not None
    store.put("c", entry(10))
    assert len(store) == 2
    assert store.nbytes == 52
