"""The input cache: keyed by the frozen prefix's weights, and clear about undecodable images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from model.network import NetworkConfig, ViralityNet
from training.cache import FromBlock, cached_inputs, prefix_digest, prefix_features, render_views
from training.data import DataError

CPU = torch.device("cpu")


def tiny_net() -> ViralityNet:
    torch.manual_seed(0)
    return ViralityNet(NetworkConfig(backbone="tiny", pooling="lena"), pretrained=False).eval()


def write_images(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = [folder / f"{i}.png" for i in range(n)]
    for path in paths:
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path)
    return paths


def test_changed_prefix_weights_miss_the_cache(tmp_path: Path) -> None:
    paths = write_images(tmp_path / "imgs", 4)
    net = tiny_net()
    stale = cached_inputs(FromBlock(net, 2), paths, 1, 0, CPU, tmp_path / "cache")
    with torch.no_grad():
        for p in net.trunk[:2].parameters():  # type: ignore[index]
            p.mul_(1.5)  # as if fine-tuned before freezing more blocks
    fresh = cached_inputs(FromBlock(net, 2), paths, 1, 0, CPU, tmp_path / "cache")
    expected = prefix_features(FromBlock(net, 2), render_views(paths, 64, 1, 0), CPU)
    torch.testing.assert_close(fresh, expected)
    assert not torch.allclose(fresh.float(), stale.float())
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 2


def test_prefix_digest_depends_on_the_prefix_only() -> None:
    net = tiny_net()
    before = prefix_digest(net, 2)
    assert prefix_digest(net, 0) == ""
    assert prefix_digest(net, 3) != before
    with torch.no_grad():
        net.pool.eta.fill_(0.9)  # outside the prefix
        assert prefix_digest(net, 2) == before
        net.trunk[0].bias[0] += 1e-3  # type: ignore[index]  # a single weight is enough
    assert prefix_digest(net, 2) != before


def test_undecodable_image_names_its_path(tmp_path: Path) -> None:
    paths = write_images(tmp_path / "imgs", 2)
    cut = tmp_path / "imgs" / "cut.jpg"
    Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8) + 90).save(cut)
    cut.write_bytes(cut.read_bytes()[:300])
    with pytest.raises(DataError, match=r"cut\.jpg: cannot decode the image"):
        cached_inputs(FromBlock(tiny_net(), 0), [*paths, cut], 1, 0, CPU, tmp_path / "cache")
