"""The engine's CPU tuning (folded batch norms, channels_last) on real MobileNetV2 trunks:
the service's and the command line's engines score as the untuned network does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from app.engine import Engine
from app.settings import Settings
from cli.options import load_engine
from model.network import NetworkConfig, ViralityNet
from model.viralnet import ViralNet, config_for_arch

from .conftest import save_calibrated
from .imaging import photo


@pytest.fixture(scope="module", params=["lena", "viralnet-m"])
def mobilenet_checkpoint(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    torch.manual_seed(0)
    net: ViralityNet | ViralNet
    if request.param == "lena":
        net = ViralityNet(NetworkConfig(backbone="mobilenet_v2", pooling="lena"), pretrained=True)
    else:
        net = ViralNet(config_for_arch("viralnet-m", "mobilenet_v2"), pretrained=True)
    return save_calibrated(net.eval(), tmp_path_factory.mktemp(request.param))


def norms(engine: Engine) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in engine.net.modules())


def test_folded_norms_score_as_the_network_does(mobilenet_checkpoint: Path) -> None:
    plain = Engine.from_settings(
        Settings(checkpoint=mobilenet_checkpoint, device="cpu", cpu_fold_batchnorm=False)
    )
    tuned = Engine.from_settings(Settings(checkpoint=mobilenet_checkpoint, device="cpu"))
    assert norms(plain) == 52
    assert norms(tuned) == 0
    assert tuned.memory_format == torch.channels_last
    size = plain.input_size
    images = [photo(size, size, seed) for seed in range(4)]
    want, got = plain.predict(images), tuned.predict(images)
    for a, b in zip(want, got, strict=True):
        assert b.score == pytest.approx(a.score, abs=1e-4)
        np.testing.assert_allclose(
            b.viraliency, a.viraliency, atol=1e-4 * np.abs(a.viraliency).max()
        )
    cli = load_engine(mobilenet_checkpoint, "cpu")
    assert norms(cli) == 0
    assert cli.memory_format == torch.channels_last
    assert [p.score for p in cli.predict(images)] == pytest.approx(
        [p.score for p in want], abs=1e-4
    )
