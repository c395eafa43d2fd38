"""Batch norms folded into their convolutions: the real MobileNetV2 trunk, before and after."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from model.backbones import build_backbone
from model.fold import fold_batchnorms


def norms(module: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in module.modules())


def test_every_norm_of_mobilenet_v2_folds_and_the_features_stay() -> None:
    trunk = build_backbone("mobilenet_v2", pretrained=True).trunk.eval()  # ImageNet statistics
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        before = trunk(x)
    assert norms(trunk) == 52
    assert fold_batchnorms(trunk) == 52
    assert norms(trunk) == 0
    with torch.no_grad():
        after = trunk(x)
    assert not torch.equal(before, after)  # float32 rounding moved: the convolutions changed
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4 * float(before.abs().max()))


def test_a_norm_in_training_mode_is_not_folded() -> None:
    block = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    with pytest.raises(ValueError, match="eval"):
        fold_batchnorms(block)
    assert fold_batchnorms(block.eval()) == 1
    assert isinstance(block[1], nn.Identity)
