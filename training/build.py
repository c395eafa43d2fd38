"""The network a run starts from: new (ImageNet trunk) or resumed, with its warm starts.

Section 3.4's objectness classes are picked on the training images by the pretrained
classifier; `--head-init ridge` sets the linear head to the ridge fit of log engagement on the
pooled features (training/ridge.py), so training starts from the linear probe.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from model.backbones import build_backbone
from model.checkpoint import load_checkpoint
from model.network import NetworkConfig, ViralityNet, most_activated_classes
from training.cache import FromBlock
from training.config import TrainConfig
from training.ridge import fit_ridge

log = logging.getLogger("viraliency.train.build")


def build_model(cfg: TrainConfig, objectness_classes: list[int] | None = None) -> ViralityNet:
    """The checkpoint's network with --resume, else a new one on the ImageNet trunk."""
    if cfg.resume:
        net, _ = load_checkpoint(Path(cfg.resume))
        log.info("resuming from %s (fresh optimiser and LR schedule)", cfg.resume)
        return net.train()
    config = NetworkConfig(cfg.backbone, cfg.pooling, cfg.eta_init, objectness_classes or [])
    return ViralityNet(config, pretrained=True)


@torch.no_grad()
def objectness_classes(model: FromBlock, views: Tensor, k: int, device: torch.device) -> list[int]:
    """The k ImageNet classes most activated on the plain views (view 0) of the training images,
    by the pretrained classifier on the pretrained trunk's features."""
    classifier = build_backbone(model.net.config.backbone, pretrained=True).classifier
    if classifier is None:
        raise ValueError(
            f"objectness needs an ImageNet classifier; {model.net.config.backbone!r} has none"
        )
    rest = model.net.trunk[model.start :].to(device).eval()  # type: ignore[index]
    plain = views[0]
    pooled = [
        rest(model.prepare(plain[i : i + 64].to(device))).mean(dim=(2, 3)).cpu()
        for i in range(0, len(plain), 64)
    ]
    classes = most_activated_classes(torch.cat(pooled), classifier, k)
    log.info("objectness: the %d most activated ImageNet classes are %s", k, classes)
    return classes


@torch.no_grad()
def init_head_from_ridge(
    model: FromBlock, inputs: Tensor, scores: np.ndarray, ratio: float, device: torch.device
) -> None:
    """Set the head to the ridge fit of log engagement on the pooled features of `inputs`
    (the plain view of each training image), so training starts from the linear probe."""
    model.to(device).eval()
    pooled = torch.cat(
        [
            model.net.pool(model.feature_maps(inputs[i : i + 128].to(device))).float().cpu()
            for i in range(0, len(inputs), 128)
        ]
    )  # (N, L)
    probe = fit_ridge(pooled.double().numpy(), scores, ratio)
    head = model.net.head
    head.weight.copy_(torch.from_numpy(probe.weight).to(head.weight)[None])
    head.bias.fill_(probe.bias)
    log.info("head initialised by ridge regression (lambda %g)", probe.penalty)
