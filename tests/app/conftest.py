"""Fixtures: a tiny real checkpoint, the real app around it, an HTTP client through its lifespan
(the helpers they use live in tests/app/helpers.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch

from app.settings import Settings
from model.checkpoint import Calibration, CheckpointInfo, load_checkpoint, save_checkpoint
from model.network import NetworkConfig, ViralityNet
from model.viralnet import ViralNet, config_for_arch

from .helpers import TRAINING, Serve, running
from .imaging import photo


def save_calibrated(net: ViralityNet | ViralNet, folder: Path) -> Path:
    """Save a tiny network into folder, calibrated on its own scores of 64 test photos."""
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
    save_checkpoint(net, info, folder)
    return folder


@pytest.fixture(scope="session")
def checkpoint_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny LENA network with random weights, calibrated on its own scores of test photos."""
    torch.manual_seed(0)
    net = ViralityNet(NetworkConfig(backbone="tiny", pooling="lena"), pretrained=False).eval()
    return save_calibrated(net, tmp_path_factory.mktemp("checkpoint"))


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


@pytest.fixture
def serve(settings_for: Callable[..., Settings]) -> Serve:
    """serve(**setting_overrides) -> async context manager giving (app, client)."""
    return lambda **overrides: running(settings_for(**overrides))


@pytest.fixture
async def client(serve: Serve) -> AsyncIterator[httpx.AsyncClient]:
    async with serve() as (_, http):
        yield http


@pytest.fixture(scope="session")
def viralnet_checkpoint_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ViralNet-M with random weights whose localisers move the crops per image (their
    last layers start at zero, which would give every image the same centred crops)."""
    torch.manual_seed(0)
    net = ViralNet(config_for_arch("viralnet-m", "tiny"), pretrained=False).eval()
    with torch.no_grad():
        for loc in net.localisers:
            loc.out.weight.normal_(0.0, 0.05)
    return save_calibrated(net, tmp_path_factory.mktemp("viralnet-checkpoint"))
