"""Expected outputs computed outside the app: decode with Pillow, squash, run the network."""

from __future__ import annotations

import io

import cv2
import numpy as np
import torch
from PIL import Image, ImageOps

from model.checkpoint import CheckpointInfo, Network


def network_input(data: bytes, info: CheckpointInfo) -> torch.Tensor:
    """The documented preprocessing: RGB, EXIF-oriented, squashed to S x S (INTER_AREA when
    shrinking), /255, -mean, /std. -> (1, 3, S, S)"""
    with Image.open(io.BytesIO(data)) as image:
        rgb = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    size = info.preprocessing.input_size
    small = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
    x = torch.from_numpy(small).permute(2, 0, 1)[None].float() / 255.0
    mean = torch.tensor(info.preprocessing.mean).view(1, 3, 1, 1)
    std = torch.tensor(info.preprocessing.std).view(1, 3, 1, 1)
    return (x - mean) / std


def expected_score(reference: tuple[Network, CheckpointInfo], data: bytes) -> float:
    net, info = reference
    with torch.no_grad():
        scores, _ = net.viraliency(network_input(data, info))
    return float(scores[0])
