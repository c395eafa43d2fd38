"""Fold ensembles: one network whose forward is the mean of its members' forwards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model.checkpoint import Calibration, CheckpointInfo, load_checkpoint, save_checkpoint
from model.ensemble import stack_members
from model.network import NetworkConfig, ViralityNet


def members(pooling: str, m: int = 3) -> list[ViralityNet]:
    """m tiny networks with one shared trunk and their own (random) etas and heads."""
    torch.manual_seed(0)
    first = ViralityNet(NetworkConfig(backbone="tiny", pooling=pooling), pretrained=False)
    nets = []
    for j in range(m):
        net = ViralityNet(NetworkConfig(backbone="tiny", pooling=pooling), pretrained=False)
        net.trunk.load_state_dict(first.trunk.state_dict())
        with torch.no_grad():
            if pooling in ("lena", "gnap"):
                net.pool.eta.uniform_(0, 1)
            net.head.weight.normal_()
            net.head.bias.fill_(float(j))
        nets.append(net.eval())
    return nets


@pytest.mark.parametrize("pooling", ["lena", "gap", "gmp"])
def test_forward_is_the_mean_of_the_members(pooling: str) -> None:
    nets = members(pooling)
    ensemble = stack_members(nets)
    images = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        each = torch.stack([net(images) for net in nets])  # each member run on its own
        torch.testing.assert_close(ensemble(images), each.mean(0), rtol=1e-5, atol=1e-5)
        # and the viraliency map of eq. (7) is the mean of the members' maps
        maps = torch.stack([net.viraliency(images)[1] for net in nets]).mean(0)
        torch.testing.assert_close(ensemble.viraliency(images)[1], maps, rtol=1e-4, atol=1e-5)


def test_members_differ_from_each_other() -> None:
    """Guards the test above: if every member scored alike, any averaging would pass."""
    nets = members("lena")
    images = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(nets[0](images), nets[1](images))


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    ensemble = stack_members(members("lena"))
    info = CheckpointInfo(
        ensemble.config, ensemble.preprocessing, Calibration.from_scores(np.linspace(-1, 1, 9))
    )
    save_checkpoint(ensemble, info, tmp_path / "ckpt")
    loaded, loaded_info = load_checkpoint(tmp_path / "ckpt")
    assert loaded_info.network.members == 3
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), ensemble(images), rtol=0, atol=0)


def test_refuses_members_with_different_trunks() -> None:
    nets = members("lena", 2)
    with torch.no_grad():
        next(iter(nets[1].trunk.parameters())).add_(1.0)
    with pytest.raises(ValueError, match="share the trunk"):
        stack_members(nets)
