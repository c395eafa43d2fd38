"""Resuming a run: the checkpoint decides the network, the split and the next epoch.

`--resume DIR` keeps the checkpoint's weights, its network (backbone, pooling, eta init,
objectness) and its recorded train/validation split; epochs continue after its last one, so new
pairs are drawn. Network flags left out come from the checkpoint; ones that contradict it are
refused. The optimiser and the learning-rate schedule start afresh.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from model.checkpoint import CheckpointError, CheckpointInfo, read_info
from model.network import NetworkConfig
from training.config import ConfigError, TrainConfig
from training.data import ScoredImage, Split, split_from_json, split_root

log = logging.getLogger("viraliency.train.resume")


def network_settings(info: CheckpointInfo) -> dict[str, Any]:
    """The TrainConfig values that built a checkpoint's network."""
    net = info.network
    if not isinstance(net, NetworkConfig):
        raise CheckpointError(f"a {info.arch} checkpoint cannot resume LENA training")
    return {
        "backbone": net.backbone,
        "pooling": net.pooling,
        "eta_init": net.eta_init,
        "objectness": len(net.objectness_classes),
    }


def adopt_network(given: dict[str, Any]) -> dict[str, Any]:
    """With --resume, the network flags the user left out, taken from the checkpoint."""
    if not given.get("resume"):
        return given
    return {**network_settings(read_info(Path(given["resume"]))), **given}


def check_resume_network(cfg: TrainConfig, info: CheckpointInfo) -> None:
    """Refuse settings that contradict the resumed network rather than silently ignore them."""
    recorded = network_settings(info)
    conflicts = [
        f"--{name.replace('_', '-')} {getattr(cfg, name)} (the checkpoint has {value!r})"
        for name, value in recorded.items()
        if getattr(cfg, name) != value
    ]
    if conflicts:
        raise ConfigError(
            f"--resume {cfg.resume} keeps the checkpoint's network, which conflicts with "
            f"{', '.join(conflicts)}: leave these flags out, or train a new network without "
            f"--resume"
        )


def resumed_split(cfg: TrainConfig, info: CheckpointInfo, images: list[ScoredImage]) -> Split:
    """The split the checkpoint was trained on: a new one would move its training images
    into validation."""
    recorded = info.training.get("data", {}).get("split")
    if recorded is None:
        raise CheckpointError(
            f"{cfg.resume} records no train/validation split (training.data.split), so it "
            f"cannot be resumed without mixing its training images into validation"
        )
    split = split_from_json(recorded, images, split_root(Path(cfg.data), cfg.data_format))
    log.info(
        "resuming: the recorded split of %s (%d training, %d validation images); --seed and "
        "--val-fraction do not change it",
        cfg.resume,
        len(split.train),
        len(split.val),
    )
    return split


def next_epoch(info: CheckpointInfo) -> int:
    """The epoch after the last one the checkpoint recorded, so resuming draws new pairs."""
    epochs = [int(record["epoch"]) for record in info.metrics.get("history", [])]
    return max(epochs) + 1 if epochs else 0
