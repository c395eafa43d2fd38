"""What a run writes: the checkpoint folder with its calibration, metrics and training record.

The service needs only the folder (model/checkpoint.py): weights, network, preprocessing and
the calibration table (quantiles of s(I) on the validation images); the record adds the data
description and licence, the split (so `--resume` and `viraliency-evaluate` find it again),
the config and the held-out metrics.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from model.checkpoint import Calibration, CheckpointInfo, save_checkpoint
from training.cache import FromBlock
from training.config import TrainConfig
from training.data import DESCRIPTIONS, Split, split_root
from training.evaluate import held_out_metrics
from training.fit import FitResult

log = logging.getLogger("viraliency.train.save")


def describe_data(cfg: TrainConfig, split: Split) -> dict[str, Any]:
    root = split_root(Path(cfg.data), cfg.data_format)
    description: dict[str, Any] = {"source": Path(cfg.data).name, "format": cfg.data_format}
    if cfg.data_format == "dankmemes":
        description.update(DESCRIPTIONS["dankmemes"])
    description["split"] = split.to_json(root)
    return description


def save_run(
    model: FromBlock,
    predicted: np.ndarray,
    val_scores: np.ndarray,
    val_pairs: np.ndarray | None,
    split: Split,
    result: FitResult,
    cfg: TrainConfig,
    announce: bool = True,
) -> Path:
    """Save the model's current state (the best so far) to cfg.out, calibrated on the
    validation images' scores `predicted`, with its metrics and training record; `announce`
    logs the metrics (off for the final save of an already announced state)."""
    metrics = held_out_metrics(predicted, val_scores, val_pairs, cfg.ratio, cfg.seed)
    metrics.update(best_epoch=result.best_epoch, history=list(result.history))
    info = CheckpointInfo(
        network=model.net.config,
        preprocessing=model.net.preprocessing,
        calibration=Calibration.from_scores(predicted),
        training={"data": describe_data(cfg, split), "config": cfg.record()},
        metrics=metrics,
    )
    out = Path(cfg.out)
    save_checkpoint(model.net, info, out)
    if announce:
        log.info(
            "best so far (epoch %d): %s",
            result.best_epoch,
            {k: v for k, v in metrics.items() if k not in ("history", "best_epoch")},
        )
    return out
