"""ViralNet's ranker inputs at its initial crops, as a table the frozen-feature recipes can fit.

With the localisers at their initialisation (the centred crops of side scale_init / 2^k of
each pyramid level: Singh & Lee's start, and where the shipped ViralNet-M's crops stayed,
weights/viralnet/MODEL_CARD.md), everything the ranker sees is a fixed function of the image:

    x(I) = [phi(I), phi(C_1), ..., phi(C_K), g(I)]      phi = GAP of the frozen trunk

so it is computed once per image and cached, and the ridge probe fitted on x is ViralNet's
ranker fitted by regression instead of on pairs. That gives ViralNet-M and -MC rows under the
same cross-validation as LENA (`training.crossval`), without training through the sampler,
which cannot be cached: it measures the architecture at its starting crops, not learned ones.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from model.images import DECODE_SCALE, DECODER_VERSION, normalise
from model.viralnet import ViralNet, config_for_arch
from training.viralnet_fit import FitConfig, freeze_trunk, load_pixels

log = logging.getLogger(__name__)


def initial_network(arch: str) -> ViralNet:
    """The network `viraliency-train --arch ARCH` starts from (its default sizes)."""
    defaults = FitConfig()
    config = config_for_arch(
        arch, "mobilenet_v2", input_size=defaults.input_size, crop_size=defaults.crop_size
    )
    torch.manual_seed(0)
    net = ViralNet(config, pretrained=True).eval()
    freeze_trunk(net)
    return net


@torch.no_grad()
def ranker_inputs(net: ViralNet, pixels: Tensor, batch: int = 32) -> Tensor:
    """x(I) for (N, S, S, 3) uint8 images at the network's own (unjittered) crops. -> (N, D)"""
    out = []
    for start in range(0, len(pixels), batch):
        levels = net.pyramid(normalise(pixels[start : start + batch], net.preprocessing))
        features = net.level_features(levels)
        crops = net.crop_features(levels, net.transforms(features))
        out.append(net.ranker_input(features[0].mean(dim=(2, 3)), crops).float())
    return torch.cat(out)


def cached_ranker_inputs(arch: str, paths: Sequence[Path], cache_dir: Path) -> Tensor:
    """ranker_inputs of the initial `arch` network for `paths`, from `cache_dir` when there.
    -> (1, N, D, 1): one view, D features, one 'position', the shape of a top-n mean table
    whose GAP column (the ridge probe's input) is x itself."""
    net = initial_network(arch)
    key = json.dumps(
        [[str(p) for p in paths], arch, net.config.to_json(), [DECODER_VERSION, DECODE_SCALE]]
    )
    path = cache_dir / f"ranker-{hashlib.sha256(key.encode()).hexdigest()[:16]}.safetensors"
    if path.is_file():
        log.info("using cached ranker inputs %s", path)
        return load_file(str(path))["inputs"]
    x = ranker_inputs(net, load_pixels(list(paths), net.preprocessing.input_size))
    table = x.half()[None, :, :, None].contiguous()
    cache_dir.mkdir(parents=True, exist_ok=True)
    save_file({"inputs": table}, str(path))
    log.info("cached %s ranker inputs of shape %s in %s", arch, tuple(table.shape), path)
    return table


def whole_image_features(inputs: Tensor, arch: str) -> np.ndarray:
    """phi(I), the whole image's GAP, from `cached_ranker_inputs(arch, ...)`: the first of its
    1 + scales equal blocks (an arch without category features). (1, N, D, 1) -> (N, L)"""
    config = config_for_arch(arch)
    if config.categories != "none":
        raise ValueError(f"{arch} has category features: use its category-free arch")
    channels = inputs.shape[2] // (1 + config.scales)
    return inputs[0, :, :channels, 0].double().numpy()
