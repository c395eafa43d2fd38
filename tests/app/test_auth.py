"""API keys: 401 without a known key (before the body is read), probes open, SIGHUP reloads."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
from pathlib import Path

import httpx
import pytest

from .helpers import Serve
from .imaging import jpeg, multipart

KEY, HASHED_KEY, NEW_KEY = "k-3f9a1c-first", "k-77be02-hashed", "k-0d44e1-new"


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    digest = hashlib.sha256(HASHED_KEY.encode()).hexdigest()
    path.write_text(f"# service keys\n{KEY}\n\nsha256:{digest}\n")
    return path


async def score(client: httpx.AsyncClient, **headers: str) -> httpx.Response:
    return await client.post("/score", files=multipart(jpeg(seed=1)), headers=headers)


def assert_unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "unauthorized"
    assert set(response.json()["error"]) >= {"code", "message"}
    assert response.headers["www-authenticate"] == "Bearer"


async def test_no_key_or_a_wrong_key_is_refused(serve: Serve, keys_file: Path) -> None:
    async with serve(api_keys_file=keys_file) as (_, client):
        assert_unauthorized(await score(client))
        assert_unauthorized(await score(client, authorization=f"Bearer {KEY}x"))
        assert_unauthorized(await score(client, **{"x-api-key": KEY[:-1]}))
        assert_unauthorized(await score(client, authorization=f"Basic {KEY}"))
        assert_unauthorized(await client.get("/heatmap", params={"image_id": "0" * 64}))
        assert_unauthorized(await client.get("/model"))
        assert_unauthorized(await client.get("/metrics"))


async def test_a_known_key_is_served_either_way_and_hashed_keys_work(
    serve: Serve, keys_file: Path
) -> None:
    async with serve(api_keys_file=keys_file) as (_, client):
        assert (await score(client, authorization=f"Bearer {KEY}")).status_code == 200
        assert (await score(client, **{"x-api-key": KEY})).status_code == 200
        assert (await score(client, authorization=f"bearer {HASHED_KEY}")).status_code == 200
        metrics = await client.get("/metrics", headers={"x-api-key": KEY})
        assert metrics.status_code == 200
        assert 'viraliency_rejections_total{reason="unauthorized"}' not in metrics.text


async def test_probes_and_docs_stay_open(serve: Serve, keys_file: Path) -> None:
    async with serve(api_keys_file=keys_file, metrics_public=True) as (_, client):
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200
        assert (await client.get("/metrics")).status_code == 200  # metrics_public
        schema = (await client.get("/openapi.json")).json()
        assert set(schema["components"]["securitySchemes"]) == {"HTTPBearer", "APIKeyHeader"}
        assert schema["paths"]["/score"]["post"]["security"]  # /docs offers 'Authorize'


async def test_keys_are_never_logged(
    serve: Serve, keys_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with serve(api_keys_file=keys_file) as (_, client):
        await score(client, authorization=f"Bearer {KEY}")
        await score(client, authorization="Bearer not-a-key-5521")
    logged = " ".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    assert "refused" in logged
    assert KEY not in logged
    assert "not-a-key-5521" not in logged


async def test_sighup_reloads_the_key_file(serve: Serve, keys_file: Path) -> None:
    async with serve(api_keys_file=keys_file) as (_, client):
        assert (await score(client, authorization=f"Bearer {NEW_KEY}")).status_code == 401
        keys_file.write_text(f"{NEW_KEY}\n")
        os.kill(os.getpid(), signal.SIGHUP)
        replies: list[int] = []

        async def new_key_works() -> bool:
            replies.append((await score(client, authorization=f"Bearer {NEW_KEY}")).status_code)
            return replies[-1] == 200

        for _ in range(100):
            if await new_key_works():
                break
            await asyncio.sleep(0.02)
        assert replies[-1] == 200
        assert (await score(client, authorization=f"Bearer {KEY}")).status_code == 401

        keys_file.write_text("sha256:not-hex\n")  # a broken file keeps the keys in use
        os.kill(os.getpid(), signal.SIGHUP)
        await asyncio.sleep(0.2)
        assert (await score(client, authorization=f"Bearer {NEW_KEY}")).status_code == 200


async def test_without_a_key_file_everything_is_open(serve: Serve) -> None:
    async with serve() as (_, client):
        assert (await score(client)).status_code == 200
        assert (await client.get("/metrics")).status_code == 200
