"""Checkpoints: a folder with `model.safetensors` (tensors) and `config.json` (everything else).

Loading never unpickles: tensors come from safetensors, the rest from JSON. The config carries
the network's architecture, the preprocessing, a summary of the learned eta, the training data
description and licence, the split, metrics, and a calibration table (quantiles of s(I) on the
validation images) so the service can report a percentile next to the raw score.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from model.backbones import Preprocessing
from model.network import NetworkConfig, ViralityNet
from model.viralnet import ViralNet, ViralNetConfig

log = logging.getLogger(__name__)

FORMAT = "viraliency-checkpoint"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
# The architecture a config.json describes; configs written before there was a choice are LENA.
DEFAULT_ARCH = "lena"

Network = ViralityNet | ViralNet


class CheckpointError(ValueError):
    """A checkpoint folder is missing, incomplete or does not match its own config."""


@dataclass
class Calibration:
    """Quantiles of s(I) over reference images: quantiles[i] is the i-th percentile."""

    quantiles: list[float]

    @classmethod
    def from_scores(cls, scores: np.ndarray) -> Calibration:
        return cls([float(q) for q in np.percentile(scores, np.arange(101))])

    def percentile(self, score: float) -> float:
        """Where a score falls among the reference images, 0-100 (clipped at the ends)."""
        q = np.asarray(self.quantiles)
        return float(np.interp(score, q, np.linspace(0.0, 100.0, len(q))))


@dataclass
class CheckpointInfo:
    network: NetworkConfig | ViralNetConfig
    preprocessing: Preprocessing
    calibration: Calibration | None = None
    training: dict[str, Any] = field(default_factory=dict)  # data, licence, split, hparams
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def arch(self) -> str:
        """ "lena" or one of model.viralnet.ARCHS."""
        return self.network.arch if isinstance(self.network, ViralNetConfig) else DEFAULT_ARCH

    def to_json(self, model: Network) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "arch": self.arch,
            "network": self.network.to_json(),
            "preprocessing": self.preprocessing.to_json(),
            **(_eta_summary(model) if isinstance(model, ViralityNet) else {}),
            "calibration": None if self.calibration is None else vars(self.calibration),
            "training": self.training,
            "metrics": self.metrics,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CheckpointInfo:
        calibration = data.get("calibration")
        arch = str(data.get("arch", DEFAULT_ARCH))
        network: NetworkConfig | ViralNetConfig
        if arch == DEFAULT_ARCH:
            network = NetworkConfig.from_json(data["network"])
        else:
            network = ViralNetConfig.from_json(data["network"])
            if network.arch != arch:
                raise ValueError(f"arch {arch!r} but the network config describes {network.arch!r}")
        return cls(
            network=network,
            preprocessing=Preprocessing.from_json(data["preprocessing"]),
            calibration=Calibration(calibration["quantiles"]) if calibration else None,
            training=dict(data.get("training") or {}),
            metrics=dict(data.get("metrics") or {}),
        )


def _eta_summary(model: ViralityNet) -> dict[str, Any]:
    eta = model.pool.eta_values().float().cpu()
    counts, edges = np.histogram(eta.numpy(), bins=10, range=(0.0, 1.0))
    return {
        "eta": {
            "mean": float(eta.mean()),
            "min": float(eta.min()),
            "max": float(eta.max()),
            "histogram": {"counts": counts.tolist(), "edges": edges.tolist()},
        }
    }


def save_checkpoint(model: Network, info: CheckpointInfo, folder: Path) -> None:
    """Write the folder; each file is written aside and renamed into place, so a run killed
    while saving (training saves at every new best) never leaves a half-written file."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    partial = folder / (WEIGHTS_FILE + ".partial")
    save_file(tensors, str(partial))
    os.replace(partial, folder / WEIGHTS_FILE)
    config = json.dumps(info.to_json(model), indent=2, sort_keys=True)
    partial = folder / (CONFIG_FILE + ".partial")
    partial.write_text(config + "\n")
    os.replace(partial, folder / CONFIG_FILE)
    log.info("saved checkpoint to %s", folder)


def read_info(folder: Path) -> CheckpointInfo:
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise CheckpointError(f"{config_path} not found: a checkpoint folder needs {CONFIG_FILE}")
    try:
        data = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{config_path} is not valid JSON: {exc}") from exc
    if data.get("format") != FORMAT or data.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{config_path} is not a {FORMAT} v{FORMAT_VERSION} config "
            f"(format={data.get('format')!r}, format_version={data.get('format_version')!r})"
        )
    try:
        return CheckpointInfo.from_json(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{config_path} is incomplete or malformed: {exc!r}") from exc


def _check_tensors(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> None:
    missing = sorted(expected.keys() - found.keys())
    unexpected = sorted(found.keys() - expected.keys())
    mismatched = [
        f"{k}: file {tuple(found[k].shape)} vs config {tuple(v.shape)}"
        for k, v in expected.items()
        if k in found and found[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"missing tensors {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if unexpected:
        problems.append(f"unexpected tensors {unexpected[:5]}")
    if mismatched:
        problems.append(f"shape mismatches {mismatched[:5]}")
    if problems:
        raise CheckpointError("weights do not match config.json: " + "; ".join(problems))


def load_checkpoint(
    folder: Path, device: str | torch.device = "cpu"
) -> tuple[ViralityNet, CheckpointInfo]:
    """Rebuild a LENA network from config.json and fill it from model.safetensors (eval mode)."""
    model, info = load_network(folder, device)
    if not isinstance(model, ViralityNet):
        raise CheckpointError(
            f"{folder} holds a {info.arch} network, not a LENA one: load it with load_network"
        )
    return model, info


def load_network(
    folder: Path, device: str | torch.device = "cpu"
) -> tuple[Network, CheckpointInfo]:
    """Rebuild the network of any architecture from config.json and model.safetensors."""
    folder = Path(folder)
    info = read_info(folder)
    weights_path = folder / WEIGHTS_FILE
    if not weights_path.is_file():
        raise CheckpointError(f"{weights_path} not found: a checkpoint folder needs {WEIGHTS_FILE}")
    model: Network
    if isinstance(info.network, ViralNetConfig):
        model = ViralNet(info.network, pretrained=False)
    else:
        model = ViralityNet(info.network, pretrained=False)
    try:
        tensors = load_file(str(weights_path))
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{weights_path} is not a readable safetensors file: {exc}") from exc
    _check_tensors(model.state_dict(), tensors)
    model.load_state_dict(tensors, strict=True)
    model.preprocessing = info.preprocessing
    return model.to(device).eval(), info
