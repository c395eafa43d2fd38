"""Rate limits: the token bucket's arithmetic, 429s for one key while others are served, and one
limit across two replicas through a real Redis."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from app.ratelimit import MemoryBuckets

from .helpers import Serve
from .imaging import jpeg, multipart
from .redis_server import RedisServer, redis_server_fixture  # noqa: F401

KEYS = ("k-alpha-41c7", "k-beta-9e02")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_the_bucket_refills_at_rate_up_to_burst() -> None:
    clock = Clock()
    buckets = MemoryBuckets(rate=2.0, burst=4.0, clock=clock)
    assert await buckets.take("a", 4) == 0  # a full bucket: the whole burst at once
    assert await buckets.take("a", 1) == pytest.approx(0.5)  # (1 - 0) / 2 images/s
    assert await buckets.take("b", 1) == 0  # every client has its own bucket
    clock.now += 0.5
    assert await buckets.take("a", 1) == 0
    clock.now += 100  # refills to the burst, no further
    assert await buckets.take("a", 5) == 0  # larger than the burst: needs a full bucket
    assert await buckets.take("a", 1) == pytest.approx((1 - (4 - 5)) / 2)  # paid in full


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    path.write_text("\n".join(KEYS) + "\n")
    return path


async def score(client: httpx.AsyncClient, key: str, images: int = 1) -> httpx.Response:
    files = multipart(*(jpeg(seed=i) for i in range(images)))
    return await client.post("/score", files=files, headers={"x-api-key": key})


def assert_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "rate_limited"
    assert int(response.headers["retry-after"]) >= 1


async def test_a_burst_gets_429s_while_other_keys_are_served(serve: Serve, keys_file: Path) -> None:
    async with serve(api_keys_file=keys_file, rate_limit=0.2, rate_limit_burst=3) as (_, client):
        replies = await asyncio.gather(*(score(client, KEYS[0]) for _ in range(8)))
        codes = sorted(r.status_code for r in replies)
        assert codes == [200] * 3 + [429] * 5  # the burst, then nothing at 0.2 images/s
        assert_limited(next(r for r in replies if r.status_code == 429))
        assert (await score(client, KEYS[1], images=3)).status_code == 200  # its own bucket
        assert_limited(await score(client, KEYS[1]))
        heatmap = await client.get("/heatmap", params={"image_id": "0" * 64},
                                   headers={"x-api-key": KEYS[0]})  # fmt: skip
        assert_limited(heatmap)  # drawing costs an image too


async def test_a_request_counts_its_images(serve: Serve) -> None:
    async with serve(rate_limit=0.2, rate_limit_burst=4) as (_, client):  # keys off: by address
        assert (
            await client.post("/score", files=multipart(jpeg(), jpeg(seed=1)))
        ).status_code == 200
        assert (
            await client.post("/score", files=multipart(jpeg(), jpeg(seed=2)))
        ).status_code == 200
        assert_limited(await client.post("/score", files=multipart(jpeg(seed=3))))


async def test_the_limit_holds_across_two_replicas_sharing_redis(
    serve: Serve, keys_file: Path, redis_server: RedisServer
) -> None:
    shared = {
        "api_keys_file": keys_file,
        "rate_limit": 0.2,
        "rate_limit_burst": 4,
        "heatmap_store_url": redis_server.url,
    }
    async with (
        serve(replica_name="a", **shared) as (_, a),
        serve(replica_name="b", **shared) as (
            _,
            b,
        ),
    ):
        assert (await score(a, KEYS[0], images=3)).status_code == 200
        assert (await score(b, KEYS[0], images=1)).status_code == 200  # 4 of 4 used, on two
        assert_limited(await score(a, KEYS[0]))
        assert_limited(await score(b, KEYS[0]))
        assert (await score(b, KEYS[1], images=4)).status_code == 200
