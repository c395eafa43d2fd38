"""Helpers for the app tests: the app through its lifespan, waiting, a full queue, metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from app.main import create_app
from app.settings import Settings

from .imaging import jpeg, multipart

TRAINING = {"data": "synthetic test images", "licence": "CC0-1.0"}

# Batching, limits, errors, metrics and shutdown must not depend on the network: a test marked
# with this runs on the tiny LENA and the tiny ViralNet-M checkpoint (conftest's `arch`).
on_both_archs = pytest.mark.parametrize("arch", ["lena", "viralnet-m"], indirect=True)


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield app, client


Serve = Callable[..., AbstractAsyncContextManager[tuple[FastAPI, httpx.AsyncClient]]]


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll `condition` until it holds; fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


FullQueue = tuple[FastAPI, httpx.AsyncClient, "asyncio.Task[httpx.Response]"]


@asynccontextmanager
async def full_queue(serve: Serve) -> AsyncIterator[FullQueue]:
    """The app with its two-image queue filled by one /score request, held in an open batch;
    also yields that request, which is answered once the batch closes."""
    async with serve(
        max_queued_images=2,
        max_images_per_request=2,
        max_wait_ms=600.0,
        batch_close_when_idle=False,  # hold the batch open for max_wait_ms
        max_batch_size=8,
    ) as (app, client):
        files = multipart(jpeg(seed=1), jpeg(seed=2))
        waiting = asyncio.create_task(client.post("/score", files=files))
        await wait_until(lambda: app.state.service.batcher.pending == 2)
        yield app, client, waiting


def sample(text: str, name: str, **labels: str) -> float:
    """One sample's value from Prometheus text (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def batches(app: FastAPI) -> tuple[int, int]:
    """(forward passes run, images in them) from the app's batch-size histogram."""
    text = app.state.metrics.render().decode()
    count = sample(text, "viraliency_batch_size_count")
    return int(count), int(sample(text, "viraliency_batch_size_sum"))


def batches_up_to(app: FastAPI, size: int) -> int:
    """How many forward passes had at most `size` images."""
    text = app.state.metrics.render().decode()
    return int(sample(text, "viraliency_batch_size_bucket", le=f"{float(size)}"))
