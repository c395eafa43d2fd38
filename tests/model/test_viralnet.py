"""ViralNet / -M / -C / -MC: shapes, initial transforms, the ranker's parts, autocast, and the
checkpoint's arch field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from model.checkpoint import (
    CheckpointError,
    CheckpointInfo,
    load_checkpoint,
    load_network,
    save_checkpoint,
)
from model.network import NetworkConfig, ViralityNet
from model.stn import affine_crop
from model.viralnet import ARCHS, ViralNet, ViralNetConfig, config_for_arch, viralnet_loss

PROBE = {"categories": "probe", "category_names": ["meme", "manipulation", "people"]}


def tiny(arch: str, **overrides: object) -> ViralNet:
    extra = dict(PROBE) if arch.endswith("c") else {}
    extra.update(overrides)
    torch.manual_seed(0)
    return ViralNet(config_for_arch(arch, "tiny", **extra), pretrained=False).eval()


@pytest.mark.parametrize("arch", ARCHS)
def test_shapes_and_arch_names(arch: str) -> None:
    net = tiny(arch)
    assert net.config.arch == arch
    scales = 3 if "-m" in arch else 1
    categories = 3 if arch.endswith("c") else 0
    assert net.ranker.in_features == (1 + scales) * 32 + categories  # tiny: L = 32
    scores, maps, transforms = net.explain(torch.randn(5, 3, 64, 64))
    assert scores.shape == (5,)
    assert maps.shape == (5, 8, 8)
    assert transforms.shape == (5, scales, 3)


def test_pyramid_starts_at_centred_crops_of_1_half_and_quarter_the_scale() -> None:
    net = tiny("viralnet-m", scale_init=0.8)
    transforms = net.explain(torch.randn(2, 3, 64, 64)).transforms
    expected = torch.tensor([[0.8, 0, 0], [0.4, 0, 0], [0.2, 0, 0]]).expand(2, 3, 3)
    torch.testing.assert_close(transforms, expected)
    levels = net.pyramid(torch.randn(1, 3, 64, 64))
    assert [tuple(level.shape[-2:]) for level in levels] == [(64, 64), (32, 32), (16, 16)]


def test_score_is_the_ranker_on_whole_image_and_crop_features() -> None:
    """s(I) recomputed by hand from the parts: GAP(trunk(I)), GAP(trunk(crop_k(I_k)))."""
    net = tiny("viralnet-m")
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        parts = [net.trunk(x).mean(dim=(2, 3))]
        for k in range(3):
            level = torch.nn.functional.avg_pool2d(x, 2**k) if k else x
            params = net.localisers[k](net.trunk(level))
            parts.append(net.trunk(affine_crop(level, params, net.config.crop_size)).mean((2, 3)))
        expected = net.ranker(torch.cat(parts, 1)).squeeze(-1)
        torch.testing.assert_close(net(x), expected)


def test_cam_sums_to_the_whole_image_share_of_the_score() -> None:
    net = tiny("viralnet")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        maps = net.explain(x).maps
        f = net.trunk(x)
        share = f.mean((2, 3)) @ net.ranker.weight[0, :32]
    torch.testing.assert_close(maps.mean((1, 2)), share)


def test_pair_logits_share_every_weight() -> None:
    net = tiny("viralnet-m")
    a, b = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(net.pair_logits(a, b), -net.pair_logits(b, a))
        torch.testing.assert_close(net.pair_logits(a, b), net(a) - net(b))


def test_category_features_are_frozen_and_enter_the_ranker() -> None:
    net = tiny("viralnet-mc")
    assert not any(name.startswith("categories") for name, _ in net.named_parameters())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = net(x)
        net.categories.set_probe(torch.randn(3, 32), torch.zeros(3))
        net.ranker.weight[0, -3:] = 1.0
        assert not torch.allclose(net(x), before)


def test_imagenet_categories_are_the_classifier_softmax() -> None:
    net = ViralNet(config_for_arch("viralnet-c", "mobilenet_v2", input_size=64), pretrained=False)
    pooled = torch.randn(2, 1280)
    expected = torch.softmax(pooled @ net.categories.class_weight.T + net.categories.class_bias, 1)
    torch.testing.assert_close(net.categories(pooled), expected)
    assert net.categories.size == 1000


def test_loss_adds_the_penalty_summed_over_levels() -> None:
    logits, labels = torch.tensor([0.0]), torch.tensor([1.0])
    inside = torch.tensor([[[0.5, 0.0, 0.0]] * 3] * 2)
    outside = inside.clone()
    outside[0, 1] = torch.tensor([0.5, 0.7, 0.0])  # 0.02 (see test_viralnet_stn)
    outside[1, 2] = torch.tensor([0.5, 0.7, 0.0])
    base = viralnet_loss(logits, labels, inside, 1.0)
    assert base.item() == pytest.approx(float(torch.log(torch.tensor(2.0))))
    # each image's penalties are summed over its levels, then averaged over the 2 images
    assert viralnet_loss(logits, labels, outside, 3.0).item() == pytest.approx(
        base.item() + 3.0 * 0.02
    )


AUTOCAST = [("cpu", torch.bfloat16)] + (
    [("cuda", torch.float16)] if torch.cuda.is_available() else []
)


@pytest.mark.parametrize(("device", "dtype"), AUTOCAST)
def test_runs_under_autocast_and_trains_the_localisers(device: str, dtype: torch.dtype) -> None:
    net = tiny("viralnet-mc").train().to(device)
    x = torch.randn(4, 3, 64, 64, device=device)
    labels = torch.tensor([1.0, 0.0], device=device)
    with torch.autocast(device_type=device, dtype=dtype):
        levels = net.pyramid(x)
        scores, params = net.score_levels(levels, net.level_features(levels))
        loss = viralnet_loss(scores[:2] - scores[2:], labels, params, 1.0)
    assert torch.isfinite(loss)
    loss.backward()
    for loc in net.localisers:
        assert loc.out.weight.grad is not None
        assert loc.out.weight.grad.abs().sum() > 0


def test_checkpoint_round_trip_keeps_arch_and_outputs(tmp_path: Path) -> None:
    net = tiny("viralnet-mc")
    net.categories.set_probe(torch.randn(3, 32), torch.randn(3))
    save_checkpoint(net, CheckpointInfo(net.config, net.preprocessing), tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["arch"] == "viralnet-mc"
    loaded, info = load_network(tmp_path)
    assert isinstance(loaded, ViralNet)
    assert isinstance(info.network, ViralNetConfig)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x))
    with pytest.raises(CheckpointError, match="load_network"):
        load_checkpoint(tmp_path)


def test_config_without_arch_is_lena(tmp_path: Path) -> None:
    net = ViralityNet(NetworkConfig(backbone="tiny"), pretrained=False)
    save_checkpoint(net, CheckpointInfo(net.config, net.preprocessing), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config.pop("arch") == "lena"
    (tmp_path / "config.json").write_text(json.dumps(config))  # as written before the field
    loaded, info = load_network(tmp_path)
    assert isinstance(loaded, ViralityNet)
    assert info.arch == "lena"


def test_mismatched_arch_is_refused(tmp_path: Path) -> None:
    net = tiny("viralnet-m")
    save_checkpoint(net, CheckpointInfo(net.config, net.preprocessing), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["arch"] = "viralnet"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="viralnet-m"):
        load_network(tmp_path)
