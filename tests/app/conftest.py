"""Fixtures: a tiny real checkpoint, the real app around it, an HTTP client through its lifespan
(the helpers they use live in tests/app/helpers.py).

The app serves the tiny LENA checkpoint; a test marked `@on_both_archs` (helpers.py) runs
twice, on it and on the tiny ViralNet-M one, through the `arch` fixture."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch

from app.settings import Settings
from model.checkpoint import (
    Calibration,
    CheckpointInfo,
    Network,
    load_checkpoint,
    load_network,
    save_checkpoint,
)
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
def arch(request: pytest.FixtureRequest) -> str:
    """The architecture the app serves: lena, unless `@on_both_archs` parametrises it."""
    return str(getattr(request, "param", "lena"))


@pytest.fixture
def served_checkpoint(arch: str, request: pytest.FixtureRequest) -> Path:
    """The tiny checkpoint of `arch`: checkpoint_dir or viralnet_checkpoint_dir."""
    name = {"lena": "checkpoint_dir", "viralnet-m": "viralnet_checkpoint_dir"}[arch]
    folder: Path = request.getfixturevalue(name)
    return folder


@pytest.fixture
def served_reference(served_checkpoint: Path) -> tuple[Network, CheckpointInfo]:
    """The served checkpoint loaded independently of the app, to compute expected outputs."""
    return load_network(served_checkpoint, "cpu")


@pytest.fixture
def settings_for(served_checkpoint: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "checkpoint": served_checkpoint,
            "device": "cpu",
            "max_batch_size": 8,
            # Batches as the tests set them, not capped by start-up timings (which vary).
            "cpu_batch_sizing": False,
            "max_wait_ms": 2.0,
            "decode_threads": 2,
            "shutdown_timeout_s": 5.0,
            # The forward pass in this process, where a test can reach and slow it down; the
            # child-process layout (the CPU default) has its own tests, test_inference_process.py,
            # and the subprocess servers (server.py) run it.
            "inference_process": False,
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
