"""A tiny real checkpoint on disk, as training writes it, for the CLI and browser tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from model.checkpoint import Calibration, CheckpointInfo, save_checkpoint
from model.images import normalise
from model.network import NetworkConfig, ViralityNet
from tests.app.imaging import photo

TRAINING = {"data": "synthetic test images", "licence": "CC0-1.0"}


def write_tiny_checkpoint(folder: Path) -> Path:
    """A tiny LENA network with random weights, calibrated on its own scores of test photos."""
    torch.manual_seed(0)
    net = ViralityNet(NetworkConfig(backbone="tiny", pooling="lena"), pretrained=False).eval()
    size = net.preprocessing.input_size
    images = torch.from_numpy(np.stack([photo(size, size, seed) for seed in range(64)]))
    with torch.no_grad():
        scores = net(normalise(images, net.preprocessing)).numpy()
    info = CheckpointInfo(
        net.config, net.preprocessing, Calibration.from_scores(scores), training=TRAINING
    )
    save_checkpoint(net, info, folder)
    return folder
