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

from model.backbones import BACKBONES, Preprocessing
from model.lena import POOLINGS
from model.network import NetworkConfig, ViralityNet
from model.viralnet import ViralNet, ViralNetConfig

log = logging.getLogger(__name__)

FORMAT = "viraliency-checkpoint"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
IMAGENET_CLASSES = 1000  # objectness class ids index the pretrained ImageNet classifier
# The architecture a config.json describes; configs written before there was a choice are LENA.
DEFAULT_ARCH = "lena"
AUTO_PLATFORM = "auto"  # per-platform heads: let the gate guess (model/network.py `mixing`)

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
    # Per-platform heads: each platform's own head's quantiles (`calibration` is the gate's mix).
    platform_calibration: dict[str, Calibration] = field(default_factory=dict)

    @property
    def platforms(self) -> list[str]:
        """The platforms a caller may name (per-platform heads); empty for one head."""
        return list(getattr(self.network, "platforms", []))

    @property
    def platform_choices(self) -> list[str]:
        """What a caller may pass as the platform: "auto" and each of `platforms`."""
        return [AUTO_PLATFORM, *self.platforms]

    def resolve_platform(self, name: str | None) -> str | None:
        """A caller's platform choice as the engine takes it: None for "auto" (or no choice,
        the gate's mix), else one of `platforms`; ValueError naming the accepted ones."""
        if name is None or name == AUTO_PLATFORM:
            return None
        if name in self.platforms:
            return name
        if not self.platforms:
            raise ValueError(
                f"platform {name!r}: this checkpoint has one head for every image; leave "
                f"platform out (or use {AUTO_PLATFORM!r})"
            )
        choices = ", ".join(self.platform_choices)
        raise ValueError(f"platform {name!r} is unknown; choose from {choices}")

    def calibration_for(self, platform: str | None) -> Calibration | None:
        """The quantiles that score is read against: a named platform's, else the default."""
        return self.calibration if platform is None else self.platform_calibration.get(platform)

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
            **(
                {"platform_calibration": {k: vars(v) for k, v in self.platform_calibration.items()}}
                if self.platform_calibration
                else {}
            ),
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
            platform_calibration={
                str(k): Calibration(v["quantiles"])
                for k, v in (data.get("platform_calibration") or {}).items()
            },
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
        info = CheckpointInfo.from_json(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{config_path} is incomplete or malformed: {exc!r}") from exc
    problem = (
        _network_problem(info.network)
        or _calibration_problem(info.calibration)
        or next(filter(None, map(_calibration_problem, info.platform_calibration.values())), None)
    )
    if problem:
        raise CheckpointError(f"{config_path}: {problem}")
    return info


def _network_problem(network: NetworkConfig | ViralNetConfig) -> str | None:
    """What is wrong with the config's `network` entry, naming the field; None if nothing."""
    if network.backbone not in BACKBONES:
        return f"network.backbone {network.backbone!r} is unknown; known: {', '.join(BACKBONES)}"
    if isinstance(network, ViralNetConfig):
        return _viralnet_problem(network)
    if network.pooling not in POOLINGS:
        return f"network.pooling {network.pooling!r} is unknown; known: {', '.join(POOLINGS)}"
    if len(set(network.platforms)) != len(network.platforms) or AUTO_PLATFORM in network.platforms:
        return f"network.platforms {network.platforms!r}: names must be unique and not 'auto'"
    if not 0.0 <= network.eta_init <= 1.0:  # also catches NaN
        return f"network.eta_init is {network.eta_init}; it must be in [0, 1]"
    bad = [
        c
        for c in network.objectness_classes
        if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < IMAGENET_CLASSES
    ]
    if bad:
        return (
            f"network.objectness_classes has unknown ImageNet class id(s) {bad[:5]}; "
            f"ids are integers in [0, {IMAGENET_CLASSES - 1}]"
        )
    return None


def _viralnet_problem(network: ViralNetConfig) -> str | None:
    if network.scales < 1:
        return f"network.scales is {network.scales}; it must be at least 1"
    if not 0.0 < network.scale_init <= 1.0:  # also catches NaN
        return f"network.scale_init is {network.scale_init}; it must be in (0, 1]"
    if network.categories not in ("none", "imagenet", "probe"):
        return f"network.categories {network.categories!r} is unknown; known: none, imagenet, probe"
    return None


def _calibration_problem(calibration: Calibration | None) -> str | None:
    """Quantiles must be >= 2 finite numbers that never decrease (np.interp needs that)."""
    if calibration is None:
        return None
    q = np.asarray(calibration.quantiles, dtype=np.float64)
    if q.ndim != 1 or len(q) < 2:
        return f"calibration.quantiles needs at least 2 numbers, got {calibration.quantiles!r}"
    if not np.isfinite(q).all():
        return f"calibration.quantiles has non-finite values at {np.flatnonzero(~np.isfinite(q))}"
    drops = np.flatnonzero(np.diff(q) < 0)
    if len(drops):
        i = int(drops[0])
        return (
            f"calibration.quantiles is not increasing: quantiles[{i + 1}] = {q[i + 1]} < "
            f"quantiles[{i}] = {q[i]} ({len(drops)} drop(s))"
        )
    return None


def _check_values(tensors: dict[str, torch.Tensor]) -> None:
    """Every float weight finite (a NaN head would score every image NaN) and eta in [0, 1]."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            count = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(
                f"weights: {name} has {count} NaN or infinite value(s) of {tensor.numel()}"
            )
    eta = tensors.get("pool.eta")
    if eta is not None and not bool(((eta >= 0) & (eta <= 1)).all()):
        outside = torch.nonzero((eta < 0) | (eta > 1)).flatten()
        raise CheckpointError(
            f"weights: pool.eta has {len(outside)} value(s) outside [0, 1], e.g. "
            f"{float(eta[outside[0]])} at channel {int(outside[0])}"
        )


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
    try:
        if isinstance(info.network, ViralNetConfig):
            model = ViralNet(info.network, pretrained=False)
        else:
            model = ViralityNet(info.network, pretrained=False)
    except ValueError as exc:  # e.g. objectness classes on a backbone without a classifier
        raise CheckpointError(f"{folder / CONFIG_FILE}: network: {exc}") from exc
    try:
        tensors = load_file(str(weights_path))
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{weights_path} is not a readable safetensors file: {exc}") from exc
    _check_tensors(model.state_dict(), tensors)
    _check_values(tensors)
    model.load_state_dict(tensors, strict=True)
    model.preprocessing = info.preprocessing
    return model.to(device).eval(), info
