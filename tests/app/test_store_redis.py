"""The heatmap store shared on a real Redis: any replica answers, TTL, item cap, faults."""

from __future__ import annotations

import asyncio
import re
import time

import httpx
import numpy as np
import redis.asyncio as redis

from app.redis_store import pack, unpack
from app.store import StoredImage

from .helpers import Serve
from .imaging import jpeg, multipart
from .redis_server import RedisServer, redis_server_fixture  # noqa: F401


async def score_one(client: httpx.AsyncClient, data: bytes) -> dict[str, object]:
    response = await client.post("/score", files=multipart(data))
    assert response.status_code == 200, response.text
    entry: dict[str, object] = response.json()["results"][0]
    return entry


def metric(text: str, name: str) -> float:
    found = re.findall(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M)
    return sum(float(value) for value in found)


def test_an_entry_survives_packing_bit_for_bit() -> None:
    viraliency = np.random.default_rng(0).standard_normal((7, 5)).astype(np.float32)
    entry = StoredImage(b"\x00upload bytes\xff", viraliency, 640, 480)
    back = unpack(pack(entry))
    assert (back.upload, back.width, back.height) == (entry.upload, 640, 480)
    np.testing.assert_array_equal(back.viraliency, viraliency)
    assert back.viraliency.flags.writeable


async def test_a_replica_answers_for_an_image_another_replica_scored(
    serve: Serve, redis_server: RedisServer
) -> None:
    shared = {"heatmap_store_url": redis_server.url}
    async with (
        serve(replica_name="a", **shared) as (_, a),
        serve(replica_name="b", **shared) as (_, b),
    ):
        entry = await score_one(a, jpeg(120, 80, seed=1))
        assert entry["heatmap_url"] is not None
        from_b = await b.get(str(entry["heatmap_url"]))
        from_a = await a.get(str(entry["heatmap_url"]))
        assert from_b.status_code == 200, from_b.text
        assert from_b.headers["x-viraliency-replica"] == "b"
        assert from_b.content == from_a.content  # the same upload and map, drawn alike
        regions = await b.get("/regions", params={"image_id": entry["image_id"]})
        assert regions.status_code == 200
        assert (regions.json()["width"], regions.json()["height"]) == (120, 80)
        ready = (await b.get("/readyz")).json()
        assert ready["heatmap_store"] == "redis"


async def test_entries_expire_with_the_ttl(serve: Serve, redis_server: RedisServer) -> None:
    async with serve(heatmap_store_url=redis_server.url, heatmap_ttl_s=1.0) as (_, client):
        entry = await score_one(client, jpeg(seed=2))
        key = f"viraliency:heatmap:{entry['image_id']}"
        async with redis.Redis.from_url(redis_server.url) as direct:
            assert 0 < await direct.pttl(key) <= 1000  # Redis itself expires it
        await asyncio.sleep(1.2)
        expired = await client.get(str(entry["heatmap_url"]))
        assert expired.status_code == 404
        assert expired.json()["error"]["code"] == "unknown_image_id"


async def test_an_entry_over_the_item_cap_is_scored_but_not_kept(
    serve: Serve, redis_server: RedisServer
) -> None:
    small, large = jpeg(32, 32, seed=3), jpeg(400, 300, seed=4)
    cap = len(small) + 4096
    assert len(large) > cap
    async with serve(heatmap_store_url=redis_server.url, heatmap_store_max_item_bytes=cap) as (
        _,
        client,
    ):
        assert (await score_one(client, large))["heatmap_url"] is None
        kept = await score_one(client, small)
        assert (await client.get(str(kept["heatmap_url"]))).status_code == 200


async def assert_store_down(client: httpx.AsyncClient, image_id: object) -> None:
    """Scoring goes on without heatmap_url; reading the store is a 503 with Retry-After."""
    entry = await score_one(client, jpeg(seed=6))
    assert entry["heatmap_url"] is None
    refused = await client.get("/heatmap", params={"image_id": image_id})
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "store_unavailable"
    assert int(refused.headers["retry-after"]) >= 1
    regions = await client.get("/regions", params={"image_id": image_id})
    assert regions.status_code == 503
    ready = await client.get("/readyz")
    assert ready.status_code == 200  # still ready: scoring does not need the store
    assert ready.json()["heatmap_store"] == "redis_unavailable"


async def assert_recovers(client: httpx.AsyncClient) -> None:
    """Within a few pauses of retry_after_s, with the same app (no restart)."""
    deadline = time.monotonic() + 30  # generous: this machine may be loaded
    while time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        entry = await score_one(client, jpeg(seed=7))
        if entry["heatmap_url"] is not None:
            break
    assert (await client.get(str(entry["heatmap_url"]))).status_code == 200
    assert (await client.get("/readyz")).json()["heatmap_store"] == "redis"


async def test_redis_killed_and_restarted_mid_run(serve: Serve, redis_server: RedisServer) -> None:
    async with serve(heatmap_store_url=redis_server.url) as (_, client):
        before = await score_one(client, jpeg(seed=5))
        assert before["heatmap_url"] is not None
        redis_server.kill()
        await assert_store_down(client, before["image_id"])
        failures = metric(
            (await client.get("/metrics")).text, "viraliency_heatmap_store_failures_total"
        )
        assert failures >= 1
        redis_server.start()  # a new, empty Redis on the same port
        await assert_recovers(client)
        gone = await client.get(str(before["heatmap_url"]))
        assert gone.status_code == 404  # the restarted Redis lost it: unknown, not unavailable


async def test_a_stalled_redis_costs_a_timeout_not_the_service(
    serve: Serve, redis_server: RedisServer
) -> None:
    async with serve(heatmap_store_url=redis_server.url, heatmap_store_timeout_s=0.2) as (
        _,
        client,
    ):
        before = await score_one(client, jpeg(seed=8))
        redis_server.pause()  # connections open, nothing answers
        try:
            await assert_store_down(client, before["image_id"])
        finally:
            redis_server.resume()
        await assert_recovers(client)
        assert (await client.get(str(before["heatmap_url"]))).status_code == 200  # still there
