"""Checkpoints: round trip without pickle, clear errors, calibration."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

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


# --------------------------------------------------------------------------------------------
# Values a checkpoint must not carry: each refused at load, naming the field
# --------------------------------------------------------------------------------------------


def edit_config(folder: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))


def edit_tensor(folder: Path, name: str, edit: Callable[[torch.Tensor], None]) -> None:
    tensors = load_file(str(folder / "model.safetensors"))
    edit(tensors[name])
    save_file(tensors, str(folder / "model.safetensors"))


def set_entry(*keys: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(config: dict[str, Any]) -> None:
        for key in keys[:-1]:
            config = config[key]
        config[keys[-1]] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (set_entry("network", "pooling", value="median"), r"network\.pooling 'median' is unknown"),
        (set_entry("network", "backbone", value="vgg99"), r"network\.backbone 'vgg99' is unknown"),
        (set_entry("network", "eta_init", value=float("nan")), r"network\.eta_init is nan"),
        (
            set_entry("network", "objectness_classes", value=[3, 1000]),
            r"network\.objectness_classes has unknown ImageNet class id\(s\) \[1000\]",
        ),
        (
            set_entry("network", "objectness_classes", value=[-1]),
            r"network\.objectness_classes .*\[-1\]",
        ),
        (
            set_entry("calibration", "quantiles", value=[0.0, 1.0, 0.5, 2.0]),
            r"calibration\.quantiles is not increasing: quantiles\[2\] = 0\.5 < quantiles\[1\]",
        ),
        (
            set_entry("calibration", "quantiles", value=[0.0, float("nan"), 2.0]),
            r"calibration\.quantiles has non-finite values",
        ),
        (set_entry("calibration", "quantiles", value=[0.0]), r"calibration\.quantiles needs"),
    ],
    ids=[
        "pooling",
        "backbone",
        "eta_init",
        "class-1000",
        "class-negative",
        "quantiles-drop",
        "quantiles-nan",
        "quantiles-short",
    ],
)
def test_bad_config_values_are_refused_naming_the_field(
    tmp_path: Path, edit: Callable[[dict[str, Any]], None], message: str
) -> None:
    _, folder = saved(tmp_path)
    edit_config(folder, edit)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(folder)


def test_objectness_on_a_backbone_without_a_classifier_is_a_checkpoint_error(
    tmp_path: Path,
) -> None:
    _, folder = saved(tmp_path)  # the tiny backbone has no ImageNet classifier
    edit_config(folder, set_entry("network", "objectness_classes", value=[3]))
    with pytest.raises(CheckpointError, match=r"network: .*has no ImageNet classifier"):
        load_checkpoint(folder)


def _set_first(value: float) -> Callable[[torch.Tensor], None]:
    def edit(tensor: torch.Tensor) -> None:
        tensor.view(-1)[0] = value

    return edit


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("pool.eta", float("nan"), r"pool\.eta has 1 NaN or infinite value"),
        ("pool.eta", 1.5, r"pool\.eta has 1 value\(s\) outside \[0, 1\], e\.g\. 1\.5 at channel 0"),
        ("pool.eta", -0.25, r"pool\.eta has 1 value\(s\) outside \[0, 1\], e\.g\. -0\.25"),
        ("head.weight", float("nan"), r"head\.weight has 1 NaN or infinite value"),
        ("head.bias", float("inf"), r"head\.bias has 1 NaN or infinite value"),
    ],
)
def test_bad_weights_are_refused_naming_the_tensor(
    tmp_path: Path, name: str, value: float, message: str
) -> None:
    _, folder = saved(tmp_path)
    edit_tensor(folder, name, _set_first(value))
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(folder)


def test_a_calibration_with_ties_still_loads(tmp_path: Path) -> None:
    _, folder = saved(tmp_path)
    edit_config(folder, set_entry("calibration", "quantiles", value=[0.0, 0.0, 1.0, 1.0]))
    _, info = load_checkpoint(folder)
    assert info.calibration is not None
    assert info.calibration.percentile(0.5) == pytest.approx(50.0)
