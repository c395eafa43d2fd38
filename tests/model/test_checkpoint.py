"""Checkpoints: round trip without pickle, clear errors, calibration."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from model.checkpoint import (
    Calibration,
    CheckpointError,
    CheckpointInfo,
    load_checkpoint,
    save_checkpoint,
)
from model.network import NetworkConfig, ViralityNet


def saved(tmp_path: Path, pooling: str = "lena") -> tuple[ViralityNet, Path]:
    torch.manual_seed(0)
    net = ViralityNet(NetworkConfig(backbone="tiny", pooling=pooling), pretrained=False).eval()
    with torch.no_grad():
        if pooling in ("lena", "gnap"):
            net.pool.eta.uniform_(0, 1)
    calibration = Calibration.from_scores(np.linspace(-1, 1, 50))
    info = CheckpointInfo(net.config, net.preprocessing, calibration, training={"data": "toy"})
    save_checkpoint(net, info, tmp_path / "ckpt")
    return net, tmp_path / "ckpt"


def test_round_trip(tmp_path: Path) -> None:
    net, folder = saved(tmp_path)
    loaded, info = load_checkpoint(folder)
    images = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), net(images), rtol=0, atol=0)
    assert not loaded.training
    assert info.training == {"data": "toy"}
    config = json.loads((folder / "config.json").read_text())
    assert config["eta"]["mean"] == pytest.approx(float(net.pool.eta.detach().mean()))
    assert sum(config["eta"]["histogram"]["counts"]) == 32


def test_fixed_eta_of_gnap_round_trips_and_stays_fixed(tmp_path: Path) -> None:
    net, folder = saved(tmp_path, "gnap")
    loaded, _ = load_checkpoint(folder)
    assert torch.equal(loaded.pool.eta_values(), net.pool.eta_values())
    assert not any(p.requires_grad for p in loaded.pool.parameters())


def test_mismatch_names_what_differs(tmp_path: Path) -> None:
    _, folder = saved(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["network"]["pooling"] = "gap"  # the weights still hold pool.eta
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"unexpected tensors \['pool.eta'\]"):
        load_checkpoint(folder)


def test_missing_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"config\.json not found"):
        load_checkpoint(tmp_path)
    _, folder = saved(tmp_path)
    (folder / "model.safetensors").write_bytes(b"\x80\x04 not safetensors")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_checkpoint(folder)
    (folder / "config.json").write_text('{"format": "something-else"}')
    with pytest.raises(CheckpointError, match="is not a viraliency-checkpoint"):
        load_checkpoint(folder)


def test_calibration_percentiles() -> None:
    reference = np.random.default_rng(0).normal(size=1000)
    calibration = Calibration.from_scores(reference)
    for score in (-1.0, 0.0, 0.5, 1.5):
        share_below = 100 * np.mean(reference < score)
        assert calibration.percentile(score) == pytest.approx(share_below, abs=1.5)
    assert calibration.percentile(-100.0) == 0.0
    assert calibration.percentile(100.0) == 100.0
