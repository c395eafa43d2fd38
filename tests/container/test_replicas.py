"""Two replicas behind HAProxy over TLS, sharing Redis: every route through the load balancer.

`.ci/container` starts docker-compose.replicas.yml (two CPU replicas, Redis, HAProxy) and runs
this module with VIRALIENCY_REPLICAS_URL (https://127.0.0.1:18443), VIRALIENCY_REPLICAS_CA (the
self-signed certificate), VIRALIENCY_REPLICAS_KEYS (the replicas' API key file, at least six
keys), VIRALIENCY_REPLICAS_BURST and VIRALIENCY_REPLICAS_RATE (their rate limit) and
VIRALIENCY_REPLICAS_STOP (a shell command that stops one replica); without them it is skipped.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.app.imaging import jpeg

URL = os.environ.get("VIRALIENCY_REPLICAS_URL", "")
TIMEOUT_S = 60.0
REPLICA = "x-viraliency-replica"

pytestmark = [
    pytest.mark.container,
    pytest.mark.skipif(
        not URL,
        reason="no replicas to test: set VIRALIENCY_REPLICAS_URL and the others (module "
        "docstring) to a running docker-compose.replicas.yml; .ci/container does this",
    ),
]


def keys() -> list[str]:
    with open(os.environ["VIRALIENCY_REPLICAS_KEYS"]) as file:
        found = [line.strip() for line in file if line.strip() and not line.startswith("#")]
    assert len(found) >= 6
    return found


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    ca = os.environ["VIRALIENCY_REPLICAS_CA"]  # verified: TLS really ends at the balancer
    verify = ssl.create_default_context(cafile=ca)
    async with httpx.AsyncClient(base_url=URL, verify=verify, timeout=TIMEOUT_S) as http:
        yield http


async def score(client: httpx.AsyncClient, key: str, seed: int) -> httpx.Response:
    files = [("images", (f"{seed}.jpg", jpeg(160, 120, seed=seed)))]
    return await client.post("/score", files=files, headers={"x-api-key": key})


async def test_scores_come_from_both_replicas(client: httpx.AsyncClient) -> None:
    replies = [await score(client, keys()[0], seed) for seed in range(6)]
    assert [r.status_code for r in replies] == [200] * 6
    assert len({r.headers[REPLICA] for r in replies}) == 2


async def test_a_replica_draws_the_heatmap_of_an_image_the_other_scored(
    client: httpx.AsyncClient,
) -> None:
    key = {"x-api-key": keys()[0]}
    scored = await score(client, keys()[0], 100)
    entry = scored.json()["results"][0]
    for _ in range(8):  # round robin: the next answers come from the other replica
        heatmap = await client.get(entry["heatmap_url"], headers=key)
        if heatmap.headers[REPLICA] != scored.headers[REPLICA]:
            break
    assert heatmap.headers[REPLICA] != scored.headers[REPLICA]
    assert heatmap.status_code == 200
    assert heatmap.headers["content-type"] == "image/png"
    regions = await client.get("/regions", params={"image_id": entry["image_id"]}, headers=key)
    assert regions.status_code == 200


async def test_keys_hold_through_the_balancer(client: httpx.AsyncClient) -> None:
    for headers in ({}, {"x-api-key": "not-a-key"}, {"authorization": "Bearer nope"}):
        refused = await client.get("/model", headers=headers)
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "unauthorized"
    assert (await client.get("/readyz")).status_code == 200  # probes stay open


async def test_the_rate_limit_holds_across_both_replicas(client: httpx.AsyncClient) -> None:
    """Each GET /heatmap costs one image: burst + 40 of them, eight at a time, get at most the
    burst (plus what refills meanwhile), though both replicas answer: one shared bucket."""
    burst = int(float(os.environ["VIRALIENCY_REPLICAS_BURST"]))
    rate = float(os.environ["VIRALIENCY_REPLICAS_RATE"])
    key = {"x-api-key": keys()[1]}
    gate = asyncio.Semaphore(8)

    async def one() -> httpx.Response:
        async with gate:
            return await client.get("/heatmap", params={"image_id": "0" * 64}, headers=key)

    started = time.monotonic()
    replies = await asyncio.gather(*(one() for _ in range(burst + 40)))
    elapsed = time.monotonic() - started
    counts = Counter(r.status_code for r in replies)
    assert set(counts) == {404, 429}, counts  # unknown id once admitted; else rate limited
    assert burst <= counts[404] <= burst + rate * elapsed + 1, (counts, elapsed)
    limited_by = {r.headers[REPLICA] for r in replies if r.status_code == 429}
    assert len(limited_by) == 2  # both replicas refused: each saw the other's spending


async def test_a_replica_stopped_mid_run_fails_no_request(client: httpx.AsyncClient) -> None:
    """Four clients score without pause; one replica gets SIGTERM (docker compose stop): it
    finishes what it was answering, the balancer sends the rest to the other one."""
    stop = os.environ["VIRALIENCY_REPLICAS_STOP"]
    running = True
    replies: list[tuple[float, int, str]] = []

    async def worker(key: str, first_seed: int) -> None:
        seed = first_seed
        while running:
            reply = await score(client, key, seed)
            replies.append((time.monotonic(), reply.status_code, reply.headers.get(REPLICA, "")))
            seed += 1

    workers = [asyncio.create_task(worker(k, 1000 * i)) for i, k in enumerate(keys()[2:6])]
    await asyncio.sleep(3)
    await asyncio.to_thread(subprocess.run, stop, shell=True, check=True)
    stopped = time.monotonic()
    await asyncio.sleep(4)
    running = False
    await asyncio.gather(*workers)
    assert Counter(code for _, code, _ in replies) == {200: len(replies)}
    before = {name for at, _, name in replies if at < stopped}
    after = {name for at, _, name in replies if at > stopped + 1}
    assert len(before) == 2
    assert len(after) == 1
    assert sum(at > stopped for at, _, _ in replies) > 0
