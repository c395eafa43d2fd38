"""Per-platform heads: each platform's standardised fold ensemble and a gate, in one network."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from model.checkpoint import (
    Calibration,
    CheckpointError,
    CheckpointInfo,
    load_checkpoint,
    save_checkpoint,
)
from model.ensemble import stack_platforms
from model.network import ViralityNet
from tests.model.test_ensemble import members

SHIFT, SCALE = [0.5, -2.0], [2.0, 0.25]


def images() -> torch.Tensor:
    return torch.randn(5, 3, 64, 64, generator=torch.Generator().manual_seed(2))


def platform_net() -> tuple[ViralityNet, dict[str, list[ViralityNet]], nn.Linear]:
    nets = members("lena", 3)  # one trunk: platform "a" gets two members, "b" one
    groups = {"a": nets[:2], "b": nets[2:]}
    torch.manual_seed(1)
    gate = nn.Linear(nets[0].head.in_features, 2)
    with torch.no_grad():  # logits centred on these images' GAP features and spread by ~2
        gap = nets[0].trunk(images()).mean(dim=(2, 3))
        logits = gate(gap)
        gate.weight.mul_(2 / logits.std(0, keepdim=True).T)
        gate.bias.sub_(gate(gap).mean(0))
    return stack_platforms(groups, gate, SHIFT, SCALE), groups, gate


def test_each_platform_is_its_standardised_ensemble_and_the_gate_mixes_them() -> None:
    net, groups, gate = platform_net()
    x = images()
    with torch.no_grad():
        z = torch.stack(
            [
                (torch.stack([m(x) for m in groups[name]]).mean(0) - SHIFT[p]) / SCALE[p]
                for p, name in enumerate(groups)
            ],
            dim=1,
        )  # (B, 2), each member run on its own
        trunk = groups["a"][0].trunk(x)
        guess = torch.softmax(gate(trunk.mean(dim=(2, 3))), dim=1)
        assert guess[:, 0].std() > 0.1  # each image gets its own mixture, not one for all
        torch.testing.assert_close(net(x), (guess * z).sum(1), rtol=1e-4, atol=1e-4)
        chosen = torch.tensor([0, 1, -1, 0, 1])
        scores, maps = net.viraliency(x, platform=chosen)
        expected = torch.where(chosen == 0, z[:, 0], z[:, 1])
        expected[2] = (guess[2] * z[2]).sum()
        torch.testing.assert_close(scores, expected, rtol=1e-4, atol=1e-4)
        # A platform's map: its members' maps averaged and scaled like its score.
        a_map = torch.stack([m.viraliency(x)[1] for m in groups["a"]]).mean(0) / SCALE[0]
        torch.testing.assert_close(maps[0], a_map[0], rtol=1e-4, atol=1e-4)
        every, every_map = net.platform_viraliency(x)
        torch.testing.assert_close(every[:, 1:], z, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(every[:, 0], net(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(every_map[0, 1], a_map[0], rtol=1e-4, atol=1e-4)


def test_checkpoint_round_trip_keeps_platforms_and_their_calibration(tmp_path: Path) -> None:
    net, _, _ = platform_net()
    quantiles = {"a": Calibration.from_scores(np.linspace(-2, 2, 9))}
    info = CheckpointInfo(
        net.config,
        net.preprocessing,
        Calibration.from_scores(np.linspace(-1, 1, 9)),
        platform_calibration=quantiles,
    )
    save_checkpoint(net, info, tmp_path / "ckpt")
    loaded, loaded_info = load_checkpoint(tmp_path / "ckpt")
    assert loaded_info.platforms == ["a", "b"]
    assert loaded_info.calibration_for("a") == quantiles["a"]
    assert loaded_info.calibration_for(None) == info.calibration
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), net(images), rtol=0, atol=0)


@pytest.mark.parametrize("names", [["a", "a"], ["auto", "b"]])
def test_refuses_platform_names_a_caller_could_not_tell_apart(
    names: list[str], tmp_path: Path
) -> None:
    net, _, _ = platform_net()
    save_checkpoint(net, CheckpointInfo(net.config, net.preprocessing), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["network"]["platforms"] = names
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"network\.platforms"):
        load_checkpoint(tmp_path)


def test_refuses_a_gate_of_the_wrong_shape() -> None:
    nets = members("gap", 2)
    with pytest.raises(ValueError, match="the gate maps"):
        stack_platforms({"a": nets[:1], "b": nets[1:]}, nn.Linear(5, 2), SHIFT, SCALE)
