"""Siamese training with the loss of eq. (1); also the `viraliency-train` command.

    viraliency-train --data ../shared/data/dankmemes2020-task1 --pooling lena --out runs/lena
    viraliency-train --help                   # every flag (training/config.py) with its help
    viraliency-train --arch viralnet-m ...    # ViralNet instead (training/viralnet_fit.py)

Read `train` top to bottom: (1) config, (2) data, split by image, (3) model and its inputs:
V augmented views of every image, pushed once through the frozen first blocks of the trunk
(`--freeze-blocks`; on a CPU this is what makes fine-tuning the rest affordable) and cached,
(4) the fit loop (training/fit.py), validation each epoch, (5) save: each new best state is
written to `--out` with its calibration and metrics, so a killed run leaves a usable
checkpoint that `--resume` continues from (training/resume.py).

Data-parallel under torchrun (DDP; gloo on CPU, nccl on CUDA): each rank trains on its share
of every epoch's pairs, rank 0 fills the cache first, validates and saves.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tqdm.contrib.logging import logging_redirect_tqdm

from model.checkpoint import CheckpointError, read_info
from model.devices import DeviceError, resolve_device
from training import viralnet_fit
from training.build import build_model, init_head_from_ridge, objectness_classes
from training.cache import FromBlock, cached_inputs
from training.config import ConfigError, TrainConfig, given_flags, make_config
from training.data import (
    DataError,
    LabelledPair,
    ScoredImage,
    Split,
    read_data,
    scores_array,
    split_by_image,
)
from training.distributed import barrier, finish, init_distributed, launched_rank
from training.evaluate import predict
from training.fit import FitResult, fit
from training.pairs import FixedPairs, index_pairs
from training.resume import adopt_network, check_resume_network, next_epoch, resumed_split
from training.save import save_run

__all__ = ["ConfigError", "TrainConfig", "main", "parse_args", "train"]

log = logging.getLogger("viraliency.train")


def train(cfg: TrainConfig) -> Path | None:
    """Run the five phases; returns the checkpoint folder (rank 0) or None (other ranks).

    The ViralNet archs run their own fit (frozen, cached trunk; training/viralnet_fit.py)."""
    if cfg.arch != "lena":
        return viralnet_fit.train(cfg)
    # (1) config: the device, the process group, and what a resumed checkpoint fixes
    rank, world, device = init_distributed(resolve_device(cfg.device))
    resumed = read_info(Path(cfg.resume)) if cfg.resume else None
    if resumed is not None:
        check_resume_network(cfg, resumed)
    cfg = replace(cfg, freeze_blocks=cfg.frozen_blocks)  # the backbone's default, recorded
    torch.manual_seed(cfg.seed)  # before the new layers are initialised

    # (2) data, split by image (a resumed run keeps its checkpoint's split)
    images, labelled = read_images(cfg)
    if resumed is None:
        split = split_by_image(images, cfg.val_fraction, cfg.seed)
    else:
        split = resumed_split(cfg, resumed, images)
        cfg = replace(cfg, val_fraction=split.val_fraction)
    train_scores, val_scores = scores_array(split.train), scores_array(split.val)
    train_pairs, val_pairs = split_pairs(labelled, split, cfg.seed) if labelled else (None, None)
    sizes = len(split.train), len(split.val)
    log.info("rank %d of %d: %d training and %d validation images", rank, world, *sizes)

    # (3) model, and its inputs: views or frozen-prefix features (rank 0 fills the cache first)
    model = FromBlock(build_model(cfg), cfg.frozen_blocks)
    for turn in range(2 if world > 1 else 1):
        if (rank == 0) == (turn == 0):
            train_paths, val_paths = [i.path for i in split.train], [i.path for i in split.val]
            train_inputs = cached_inputs(model, train_paths, cfg.views, cfg.seed, device)
            val_inputs = cached_inputs(model, val_paths, 1, cfg.seed, device)[0]
        barrier(world)
    if cfg.objectness and not cfg.resume:  # same frozen prefix, so the cached inputs still hold
        classes = objectness_classes(model, train_inputs, cfg.objectness, device)
        torch.manual_seed(cfg.seed)
        model = FromBlock(build_model(cfg, classes), cfg.frozen_blocks)
    if cfg.head_init == "ridge" and not cfg.resume:
        init_head_from_ridge(model, train_inputs[0], train_scores, cfg.train_ratio, device)

    # (4) fit; (5) each new best state is saved with its calibration and metrics
    def save(result: FitResult, predicted: np.ndarray) -> None:
        save_run(model, predicted, val_scores, val_pairs, split, result, cfg)

    result = fit(
        model,
        train_inputs,
        train_scores,
        val_inputs,
        val_scores,
        cfg,
        device,
        train_pairs,
        val_pairs,
        first_epoch=next_epoch(resumed) if resumed is not None else 0,
        on_best=save if rank == 0 else None,
    )
    log.info(
        "rank %d of %d: final parameters sha256 %s, pairs sha256 %s",
        rank,
        world,
        result.param_digest,
        result.pairs_digest,
    )
    if rank != 0:
        finish(world)
        return None
    # (5) the best state again, now with the whole history
    model.load_state_dict(result.model_state)
    predicted = predict(model, val_inputs, device)
    out = save_run(model, predicted, val_scores, val_pairs, split, result, cfg, announce=False)
    log.info("done: %s holds epoch %d, the best of %d", out, result.best_epoch, len(result.history))
    finish(world)
    return out


def read_images(cfg: TrainConfig) -> tuple[list[ScoredImage], list[LabelledPair] | None]:
    """The images (with scores), and the user's labelled pairs when the data is a pair CSV."""
    return read_data(Path(cfg.data), cfg.data_format, cfg.on_bad_image)


def split_pairs(
    pairs: list[LabelledPair], split: Split, seed: int
) -> tuple[FixedPairs, np.ndarray]:
    """Training pairs (both images in train) and validation pairs (both in validation)."""
    train, dropped_train = index_pairs(pairs, [i.path for i in split.train])
    val, _ = index_pairs(pairs, [i.path for i in split.val])
    log.info(
        "%d training and %d validation pairs; %d pairs cross the image split and are unused",
        len(train),
        len(val),
        dropped_train - len(val),
    )
    if not len(train) or not len(val):
        raise DataError("too few labelled pairs on each side of the image split to train")
    return FixedPairs(train, seed), val


def parse_args(argv: Sequence[str] | None = None) -> TrainConfig:
    """The config from the flags; with --resume, network flags not given are the checkpoint's."""
    return make_config(adopt_network(given_flags(sys.argv[1:] if argv is None else argv)))


def main(argv: Sequence[str] | None = None) -> None:
    # Under torchrun every rank reads the same data and cache: only rank 0 logs all of it;
    # the others log warnings and their own lines (viraliency.train: their share, digests).
    quiet = launched_rank() != 0
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    log.setLevel(logging.INFO)
    try:
        with logging_redirect_tqdm():  # log lines above the progress bars, not through them
            train(parse_args(argv))
    except (ConfigError, DataError, CheckpointError, DeviceError) as exc:
        # The user's data or flags: the message says what to fix; a traceback would bury it.
        raise SystemExit(f"viraliency-train: error: {exc}") from exc


if __name__ == "__main__":
    main()
