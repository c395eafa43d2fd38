"""Training ViralNet / -M / -C / -MC on any per-image score layout training reads.

    python -m training.train --arch viralnet-m --data ../shared/data/dankmemes2020-task1 \\
        --out runs/viralnet-m --input-size 160 --crop-size 112 --epochs 4

`training.train` parses the flags (training/config.py) and hands the run here (`train`);
`python -m training.viralnet ...` is the same command with `--arch viralnet-m` by default.

The trunk is frozen at its ImageNet weights (as `--freeze-blocks` all of it for LENA), so its
features of every pyramid level I, I/2, I/4 are computed once and cached in memory; each step
then runs the trunk only on the crops (forward, and backward to the sampling grid so the
localisers learn). Trained: the localisers and the ranker's linear unit.

Phases: read and split the data (the same split_by_image as LENA, so both are scored on the
same validation images) -> decode and squash the images -> cache the pyramid's trunk features
-> epochs of fresh pairs (the same PairSampler protocols) -> validation metrics
(training/evaluate.py) and the calibration -> checkpoint.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from model.checkpoint import Calibration, CheckpointInfo, save_checkpoint
from model.images import normalise, squash
from model.viralnet import ViralNet, config_for_arch, level_inits, viralnet_loss
from training.categories import PROBE_L2, fit_probe
from training.config import ConfigError, TrainConfig
from training.data import (
    DANKMEMES_CATEGORIES,
    DESCRIPTIONS,
    BadImagePolicy,
    read_dankmemes,
    read_dankmemes_categories,
    read_data,
    scores_array,
    split_by_image,
    split_root,
)
from training.evaluate import validation_metrics
from training.pairs import PairProtocol, PairSampler
from training.views import load_rgb

log = logging.getLogger("viraliency.viralnet")


@dataclass
class FitConfig:
    arch: str = "viralnet-m"
    backbone: str = "mobilenet_v2"
    data: str = ""
    data_format: str = "dankmemes"
    on_bad_image: BadImagePolicy = "error"
    out: str = "runs/viralnet"
    input_size: int = 160
    crop_size: int = 112
    epochs: int = 4
    pairs_per_epoch: int = 2048
    batch_pairs: int = 32
    protocol: PairProtocol = "ratio"
    ratio: float = 2.0  # validation pairs differ by at least this factor
    train_ratio: float = 2.0  # training pairs too, with protocol "ratio"
    lr: float = 1e-3  # ranker
    loc_lr: float = 1e-4  # localisers
    weight_decay: float = 1e-4
    penalty: float = 1.0  # weight of the spatial penalty
    # A crop may shrink to this fraction of its level's initial side before the shrink penalty
    # (model/stn.py) charges it; 0 = off, the paper's loss.
    min_crop: float = 0.5
    # The ranker trains alone for this many steps first: until it ranks something, the
    # localisers' gradients are noise, and Adam moves their zero-initialised last layer (1,024
    # inputs) by many times loc_lr per step. 0 = from the first step.
    warmup_steps: int = 100
    jitter_area: float = 0.9  # each level is sampled in a random window of this area
    categories: str = ""  # "" = the arch's default (imagenet for -c / -mc), or "probe"
    category_data: str = ""  # the probe's DANKMEMES folder ("": data, its training images)
    val_fraction: float = 0.15
    seed: int = 0


def load_pixels(paths: list[Path], size: int) -> Tensor:
    """Decode and squash images. -> uint8 (N, size, size, 3)"""
    return torch.from_numpy(np.stack([squash(load_rgb(p, size), size) for p in paths]))


@torch.no_grad()
def level_cache(
    net: ViralNet, pixels: Tensor, batch: int = 32, levels: int | None = None
) -> list[Tensor]:
    """trunk(I_k) for every image and each of the first `levels` pyramid levels (default: all),
    computed once (the trunk is frozen)."""
    count = net.config.scales if levels is None else levels
    parts: list[list[Tensor]] = [[] for _ in range(count)]
    for start in range(0, len(pixels), batch):
        x = normalise(pixels[start : start + batch], net.preprocessing)
        for k, f in enumerate(net.level_features(net.pyramid(x)[:count])):
            parts[k].append(f)
    return [torch.cat(p) for p in parts]


def random_jitter(n: int, levels: int, area: float, gen: torch.Generator) -> Tensor:
    """(n, levels, 3) windows (a, u_x, u_y) of side a = sqrt(area), anywhere inside the image."""
    a = area**0.5
    shift = (torch.rand(n, levels, 2, generator=gen) * 2 - 1) * (1 - a)
    return torch.cat([torch.full((n, levels, 1), a), shift], dim=-1)


@torch.no_grad()
def predict(net: ViralNet, pixels: Tensor, cache: list[Tensor], batch: int = 64) -> np.ndarray:
    """s(I) of every image, without jitter. -> (N,)"""
    net.eval()
    out = []
    for start in range(0, len(pixels), batch):
        x = normalise(pixels[start : start + batch], net.preprocessing)
        feats = [c[start : start + batch] for c in cache]
        out.append(net.score_levels(net.pyramid(x), feats)[0])
    return torch.cat(out).float().numpy()


def freeze_trunk(net: ViralNet) -> None:
    net.trunk.eval()  # batch-norm statistics stay ImageNet's
    for p in net.trunk.parameters():
        p.requires_grad_(False)


def train_epoch(
    net: ViralNet,
    optimiser: torch.optim.Optimizer,
    pixels: Tensor,
    cache: list[Tensor],
    pairs: np.ndarray,
    labels: np.ndarray,
    cfg: FitConfig,
    gen: torch.Generator,
    step: int = 0,
) -> dict[str, float]:
    """One pass over the epoch's pairs; returns the mean loss, penalty and pair accuracy.

    `step` counts the steps of earlier epochs: the localisers' learning rate (the optimiser's
    first group) is 0 until cfg.warmup_steps steps have been taken in all."""
    net.localisers.train()
    totals = {"loss": 0.0, "correct": 0.0}
    min_scales = cfg.min_crop * torch.tensor(level_inits(net.config)) if cfg.min_crop else None
    for start in range(0, len(pairs), cfg.batch_pairs):
        optimiser.param_groups[0]["lr"] = cfg.loc_lr if step >= cfg.warmup_steps else 0.0
        step += 1
        batch = torch.from_numpy(pairs[start : start + cfg.batch_pairs])  # (P, 2)
        index = torch.cat([batch[:, 0], batch[:, 1]])  # (2P,): the a images, then the b images
        target = torch.from_numpy(labels[start : start + cfg.batch_pairs])
        x = normalise(pixels[index], net.preprocessing)
        jitter = random_jitter(len(index), net.config.scales, cfg.jitter_area, gen)
        scores, params = net.score_levels(net.pyramid(x), [c[index] for c in cache], jitter)
        logits = scores[: len(batch)] - scores[len(batch) :]
        loss = viralnet_loss(logits, target, params, cfg.penalty, min_scales)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        totals["loss"] += loss.item() * len(batch)
        totals["correct"] += ((logits.detach() > 0).float() == target).sum().item()
    n = max(1, len(pairs))
    return {"train_loss": totals["loss"] / n, "train_acc": totals["correct"] / n}


def fit(cfg: FitConfig) -> dict[str, Any]:
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    # -- data: the same reader, split and pair protocol as LENA --------------------------------
    data = Path(cfg.data)
    images, labelled = read_data(data, cfg.data_format, cfg.on_bad_image)
    if labelled is not None:
        raise ConfigError("ViralNet trains on per-image scores (dankmemes, reddit, scores)")
    split = split_by_image(images, cfg.val_fraction, cfg.seed)
    # -- the network, its frozen trunk and the cached pyramid features -------------------------
    overrides: dict[str, Any] = {"input_size": cfg.input_size, "crop_size": cfg.crop_size}
    if cfg.categories:
        overrides["categories"] = cfg.categories
    if cfg.categories == "probe":
        overrides["category_names"] = list(DANKMEMES_CATEGORIES)
    net = ViralNet(config_for_arch(cfg.arch, cfg.backbone, **overrides), pretrained=True)
    freeze_trunk(net)
    started = time.perf_counter()
    train_px = load_pixels([i.path for i in split.train], net.preprocessing.input_size)
    val_px = load_pixels([i.path for i in split.val], net.preprocessing.input_size)
    train_cache, val_cache = level_cache(net, train_px), level_cache(net, val_px)
    log.info("decoded and cached %d images in %.0f s", len(images), time.perf_counter() - started)
    probe_record = None
    if cfg.categories == "probe":
        probe_record = fit_category_probe(net, cfg, [i.path for i in split.train], train_cache)
    # -- training: Adam on the localisers and the ranker -------------------------------------
    optimiser = torch.optim.Adam(
        [
            {"params": net.localisers.parameters(), "lr": cfg.loc_lr},
            {"params": net.ranker.parameters(), "lr": cfg.lr},
        ],
        weight_decay=cfg.weight_decay,
    )
    sampler = PairSampler(
        scores_array(split.train), cfg.protocol, cfg.train_ratio, cfg.pairs_per_epoch, cfg.seed
    )
    truth = scores_array(split.val)
    history = []
    step = 0  # optimiser steps taken, for the ranker's warm-up
    for epoch in range(cfg.epochs):
        pairs, labels = sampler.epoch(epoch)
        row = train_epoch(net, optimiser, train_px, train_cache, pairs, labels, cfg, gen, step)
        step += -(-len(pairs) // cfg.batch_pairs)
        row["val_acc"] = validation_metrics(
            predict(net, val_px, val_cache), truth, cfg.ratio, cfg.seed
        )["val_acc"]
        history.append({"epoch": epoch, **row, "seconds": round(time.perf_counter() - started)})
        log.info("epoch %s", history[-1])
    # -- the final epoch's network (no selection on validation), its metrics, the checkpoint ---
    predicted = predict(net, val_px, val_cache)
    metrics = {**validation_metrics(predicted, truth, cfg.ratio, cfg.seed), "history": history}
    training = {
        "config": asdict(cfg),
        "data": {
            **(DESCRIPTIONS["dankmemes"] if cfg.data_format == "dankmemes" else {}),
            "format": cfg.data_format,
            "source": data.name,
            "split": split.to_json(split_root(data, cfg.data_format)),
        },
        "trunk": "frozen at ImageNet weights",
    }
    if probe_record is not None:
        training["category_probe"] = probe_record
    info = CheckpointInfo(
        net.config, net.preprocessing, Calibration.from_scores(predicted), training, metrics
    )
    save_checkpoint(net, info, Path(cfg.out))
    return metrics


def fit_category_probe(
    net: ViralNet, cfg: FitConfig, train_paths: list[Path], train_cache: list[Tensor]
) -> dict[str, Any]:
    """ViralNet-C's category network, fitted before the ranker and frozen (section 3.2): the
    logistic probe of DANKMEMES's category labels on phi(I), from the training images of
    DANKMEMES data, or from every image of --category-data. Returns what the checkpoint
    records of it."""
    if cfg.category_data:
        root = Path(cfg.category_data)
        paths = [image.path for image in read_dankmemes(root, on_bad_image="skip")]
        pixels = load_pixels(paths, net.preprocessing.input_size)
        [whole] = level_cache(net, pixels, levels=1)  # phi(I) needs the whole image only
    else:
        root, paths, whole = Path(cfg.data), train_paths, train_cache[0]
    labels = read_dankmemes_categories(root, paths)
    probe = fit_probe(whole.mean(dim=(2, 3)).double().numpy(), labels)
    net.categories.set_probe(probe.weight.detach().float(), probe.bias.detach().float())
    log.info("category probe fitted on %d DANKMEMES images (%s)", len(paths), root)
    return {
        "categories": list(DANKMEMES_CATEGORIES),
        "source": root.name,
        "images": len(paths),
        "l2": PROBE_L2,
        "label_rates": [round(float(r), 4) for r in labels.mean(axis=0)],
    }


def fit_config(cfg: TrainConfig) -> FitConfig:
    """The ViralNet fit of a `viraliency-train --arch viralnet*` config: the shared data, split,
    pair and run flags, --head-lr as the ranker's learning rate, and ViralNet's own flags."""
    assert cfg.weight_decay is not None  # TrainConfig fills in the architecture's default
    return FitConfig(
        arch=cfg.arch,
        backbone=cfg.backbone,
        data=cfg.data,
        data_format=cfg.data_format,
        on_bad_image=cfg.on_bad_image,
        out=cfg.out,
        input_size=cfg.input_size,
        crop_size=cfg.crop_size,
        epochs=cfg.epochs,
        pairs_per_epoch=cfg.pairs_per_epoch,
        batch_pairs=cfg.batch_pairs,
        protocol=cfg.protocol,
        ratio=cfg.ratio,
        train_ratio=cfg.train_ratio,
        lr=cfg.head_lr,
        loc_lr=cfg.loc_lr,
        weight_decay=cfg.weight_decay,
        penalty=cfg.penalty,
        min_crop=cfg.min_crop,
        warmup_steps=cfg.warmup_steps,
        jitter_area=cfg.jitter_area,
        categories=cfg.categories if cfg.arch.endswith("c") else "",
        category_data=cfg.category_data,
        val_fraction=cfg.val_fraction,
        seed=cfg.seed,
    )


def train(cfg: TrainConfig) -> Path:
    """Fit the ViralNet a training config describes; returns the checkpoint folder."""
    metrics = fit(fit_config(cfg))
    log.info(
        "val_acc %.4f CI95 %s on %d pairs",
        metrics["val_acc"],
        metrics["val_acc_ci95"],
        metrics["val_pairs"],
    )
    return Path(cfg.out)
