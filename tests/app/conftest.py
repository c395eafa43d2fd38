"""A tiny real checkpoint, the real app around it, and an HTTP client through its lifespan."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from app.main import create_app
from app.settings import Settings
from model.checkpoint import Calibration, CheckpointInfo, load_checkpoint, save_checkpoint
from model.network import NetworkConfig, ViralityNet

from .imaging import jpeg, multipart, photo

TRAINING = {"data": "synthetic test images", "licence": "CC0-1.0"}


@pytest.fixture(scope="session")
def checkpoint_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny LENA network with random weights, calibrated on its own scores of test photos."""
    torch.manual_seed(0)
    net = ViralityNet(NetworkConfig(backbone="tiny", pooling="lena"), pretrained=False).eval()
    size = net.preprocessing.input_size
    images = np.stack([photo(size, size, seed) for seed in range(64)])  # (N, S, S, 3)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(net.preprocessing.mean).view(1, 3, 1, 1)
    std = torch.tensor(net.preprocessing.std).view(1, 3, 1, 1)
    with torch.no_grad():
        scores = net((x - mean) / std).numpy()
    info = CheckpointInfo(
        net.config, net.preprocessing, Calibration.from_scores(scores), training=TRAINING
    )
    folder = tmp_path_factory.mktemp("checkpoint")
    save_checkpoint(net, info, folder)
    return folder


@pytest.fixture(scope="session")
def reference(checkpoint_dir: Path) -> tuple[ViralityNet, CheckpointInfo]:
    """The same checkpoint loaded independently of the app, to compute expected outputs."""
    return load_checkpoint(checkpoint_dir, "cpu")


@pytest.fixture
def settings_for(checkpoint_dir: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "checkpoint": checkpoint_dir,
            "device": "cpu",
            "max_batch_size": 8,
            "max_wait_ms": 2.0,
            "decode_threads": 2,
            "shutdown_timeout_s": 5.0,
        }
        values.update(overrides)
        return Settings(**values)

    return make


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield app, client


Serve = Callable[..., AbstractAsyncContextManager[tuple[FastAPI, httpx.AsyncClient]]]


@pytest.fixture
def serve(settings_for: Callable[..., Settings]) -> Serve:
    """serve(**setting_overrides) -> async context manager giving (app, client)."""
    return lambda **overrides: running(settings_for(**overrides))


@pytest.fixture
async def client(serve: Serve) -> AsyncIterator[httpx.AsyncClient]:
    async with serve() as (_, http):
        yield http


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
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


@pytest.fixture(scope="session")
def viralnet_checkpoint_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ViralNet-M with random weights whose localisers move the crops per image (their
    last layers start at zero, which would give every image the same centred crops)."""
    from model.viralnet import ViralNet, config_for_arch

    torch.manual_seed(0)
    net = ViralNet(config_for_arch("viralnet-m", "tiny"), pretrained=False).eval()
    with torch.no_grad():
        for loc in net.localisers:
            loc.out.weight.normal_(0.0, 0.05)
    size = net.preprocessing.input_size
    images = np.stack([photo(size, size, seed) for seed in range(64)])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(net.preprocessing.mean).view(1, 3, 1, 1)
    std = torch.tensor(net.preprocessing.std).view(1, 3, 1, 1)
    with torch.no_grad():
        scores = net((x - mean) / std).numpy()
    info = CheckpointInfo(
        net.config, net.preprocessing, Calibration.from_scores(scores), training=TRAINING
    )
    folder = tmp_path_factory.mktemp("viralnet-checkpoint")
    save_checkpoint(net, info, folder)
    return folder
