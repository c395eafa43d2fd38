"""Pixels for the network: the squash resize and the backbone's normalisation."""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import Tensor

from model.backbones import Preprocessing


def squash(rgb: np.ndarray, size: int) -> np.ndarray:
    """Resize the whole image to size x size (the 'squash' policy: nothing is cropped)."""
    return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)


def normalise(batch: Tensor, pre: Preprocessing) -> Tensor:
    """uint8 (B, S, S, 3) -> float (B, 3, S, S) with the backbone's mean and std."""
    x = batch.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(pre.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(pre.std, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std
