"""Top-n mean tables give the same scores and eta gradients as pooling the feature maps."""

from __future__ import annotations

import pytest
import torch

from model.network import NetworkConfig, ViralityNet
from training.tables import TableHead, top_mean_table


@pytest.mark.parametrize(
    ("pooling", "eta"),
    [("lena", 0.5), ("lena", 0.0), ("lena", 1.0), ("gnap", 0.3), ("gap", 0.5), ("gmp", 0.5)],
)
def test_table_head_matches_pooling_the_maps(pooling: str, eta: float) -> None:
    torch.manual_seed(0)
    net = ViralityNet(NetworkConfig(backbone="tiny", pooling=pooling, eta_init=eta), False)
    if pooling == "lena":
        with torch.no_grad():
            net.pool.eta.uniform_(0, 1)  # every channel its own N
    channels = net.head.in_features
    maps = torch.randn(5, channels, 6, 7)
    table = top_mean_table(maps.half().float()).float()  # (5, C, 42)
    head = TableHead(net)
    from_table = head(table)
    from_maps = net.score_features(maps.half().float())
    torch.testing.assert_close(from_table, from_maps, rtol=1e-3, atol=2e-3)
    if pooling == "lena":
        from_table.sum().backward()
        grad_table = net.pool.eta.grad.clone()
        net.pool.eta.grad = None
        net.score_features(maps.half().float()).sum().backward()
        torch.testing.assert_close(grad_table, net.pool.eta.grad, rtol=1e-2, atol=1e-2)
        assert grad_table.abs().sum() > 0  # the comparison above is not of two zeros


def test_table_is_the_running_top_n_mean() -> None:
    maps = torch.tensor([[[[3.0, 1.0], [4.0, 2.0]]]])  # (1, 1, 2, 2)
    table = top_mean_table(maps)
    torch.testing.assert_close(
        table.float(), torch.tensor([[[4.0, 3.5, 3.0, 2.5]]]), rtol=1e-3, atol=1e-3
    )
