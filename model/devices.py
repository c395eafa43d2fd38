"""One device resolver for training, evaluation and serving.

    "auto" -> cuda when a GPU is visible, else cpu;  "cpu";  "cuda";  "cuda:N"

An explicit CUDA device must exist: asking for one that is not there is an error that says so,
never a silent fall back to the CPU.
"""

from __future__ import annotations

import re

import torch

DEVICE_PATTERN = r"^(auto|cpu|cuda(:\d+)?)$"


class DeviceError(RuntimeError):
    """A requested device that this machine does not have."""


def resolve_device(requested: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; an explicit CUDA device must exist."""
    if not re.fullmatch(DEVICE_PATTERN, requested):
        raise DeviceError(f"device {requested!r}: choose auto, cpu, cuda or cuda:N")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {requested!r} requested but CUDA is not available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {requested!r} requested but only {torch.cuda.device_count()} "
                "CUDA device(s) are visible"
            )
    return device
