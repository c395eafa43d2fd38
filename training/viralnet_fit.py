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
(training/evaluate.py) and the calibration -> checkpoint. `train_and_score` is the middle of
that (a network trained on some images, scoring others), which the cross-validation
(training/viralnet_cv.py) runs once per fold.

Devices (`--device`, model/devices.py): the network and the cached features live on it; the
decoded pixels stay on the CPU and each step copies its batch over. On CUDA the training
forward pass runs under autocast (bfloat16, or float16 with a GradScaler on GPUs without
bfloat16); the ranker, the loss and the penalties stay float32, and scoring runs in float32.
On the CPU nothing is autocast: results are what they were before devices existed, bit for bit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from model.checkpoint import Calibration, CheckpointInfo, save_checkpoint
from model.devices import resolve_device
from model.images import normalise, squash
from model.viralnet import ViralNet, config_for_arch, level_inits, viralnet_loss
from training.categories import PROBE_L2, fit_probe
from training.config import ConfigError, TrainConfig
from training.data import (
    DANKMEMES_CATEGORIES,
    DESCRIPTIONS,
    BadImagePolicy,
    ScoredImage,
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
    device: str = "auto"  # auto (CUDA when available), cpu, cuda or cuda:N


def load_pixels(paths: list[Path], size: int) -> Tensor:
    """Decode and squash images. -> uint8 (N, size, size, 3)"""
    return torch.from_numpy(np.stack([squash(load_rgb(p, size), size) for p in paths]))


def device_of(net: ViralNet) -> torch.device:
    """Where the network (and so its cached features) lives."""
    return next(net.parameters()).device


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The half precision a training step autocasts to on `device`: bfloat16 on CUDA GPUs that
    have it natively, float16 on older ones (emulated bfloat16 would be slower than float32);
    None on the CPU, which trains in float32 as it always did."""
    if device.type != "cuda":
        return None
    return (
        torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    )


def mixed_precision(device: torch.device) -> AbstractContextManager[Any]:
    """Autocast to `autocast_dtype(device)`, or a no-op where that is None."""
    dtype = autocast_dtype(device)
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def grad_scaler(device: torch.device) -> torch.amp.GradScaler:
    """float16's loss scaling (its gradients underflow without it); a pass-through otherwise."""
    return torch.amp.GradScaler(device.type, enabled=autocast_dtype(device) == torch.float16)


def batch_to(pixels: Tensor, index: Tensor, device: torch.device) -> Tensor:
    """pixels[index] on `device`. For CUDA the rows are gathered straight into pinned memory,
    so the copy is asynchronous and overlaps the GPU's work on the step before (pinning all of
    `pixels` would not do that: indexing makes a new, pageable tensor). (B, S, S, 3) uint8"""
    if device.type != "cuda":
        return pixels[index]
    staged = torch.empty((len(index), *pixels.shape[1:]), dtype=pixels.dtype, pin_memory=True)
    torch.index_select(pixels, 0, index, out=staged)
    return staged.to(device, non_blocking=True)


@torch.no_grad()
def level_cache(
    net: ViralNet, pixels: Tensor, batch: int = 32, levels: int | None = None
) -> list[Tensor]:
    """trunk(I_k) for every image and each of the first `levels` pyramid levels (default: all),
    computed once (the trunk is frozen), in float32 on the network's device."""
    count = net.config.scales if levels is None else levels
    device = device_of(net)
    parts: list[list[Tensor]] = [[] for _ in range(count)]
    for start in range(0, len(pixels), batch):
        x = normalise(pixels[start : start + batch].to(device), net.preprocessing)
        for k, f in enumerate(net.level_features(net.pyramid(x)[:count])):
            parts[k].append(f)
    return [torch.cat(p) for p in parts]


@dataclass(frozen=True)
class Encoded:
    """Images as the training steps and the scoring read them."""

    pixels: Tensor  # uint8 (N, S, S, 3), on the CPU: each step copies its batch over
    cache: list[Tensor]  # K x (N, L, h_k, w_k) trunk features, on the network's device
    scores: np.ndarray  # (N,) engagement

    def subset(self, index: np.ndarray) -> Encoded:
        """The images `index` (e.g. a fold's), without decoding or running the trunk again."""
        rows = torch.from_numpy(index)
        cache = [c[rows.to(c.device)] for c in self.cache]
        return Encoded(self.pixels[rows], cache, self.scores[index])


def encode(net: ViralNet, images: Sequence[ScoredImage]) -> Encoded:
    """Decode `images` at the network's input size and cache their trunk features."""
    pixels = load_pixels([i.path for i in images], net.preprocessing.input_size)
    return Encoded(pixels, level_cache(net, pixels), scores_array(images))


def random_jitter(n: int, levels: int, area: float, gen: torch.Generator) -> Tensor:
    """(n, levels, 3) windows (a, u_x, u_y) of side a = sqrt(area), anywhere inside the image.
    On the CPU, as `gen` is: the same seed draws the same windows whatever the device."""
    a = area**0.5
    shift = (torch.rand(n, levels, 2, generator=gen) * 2 - 1) * (1 - a)
    return torch.cat([torch.full((n, levels, 1), a), shift], dim=-1)


@torch.no_grad()
def predict(net: ViralNet, pixels: Tensor, cache: list[Tensor], batch: int = 64) -> np.ndarray:
    """s(I) of every image, without jitter, in float32 (the calibration and the held-out
    scores are compared with the CPU's, and scoring is a small share of a run). -> (N,)"""
    net.eval()
    device = device_of(net)
    out = []
    for start in range(0, len(pixels), batch):
        x = normalise(pixels[start : start + batch].to(device), net.preprocessing)
        feats = [c[start : start + batch] for c in cache]
        out.append(net.score_levels(net.pyramid(x), feats)[0])
    return torch.cat(out).float().cpu().numpy()


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
    scaler: torch.amp.GradScaler | None = None,
) -> dict[str, float]:
    """One pass over the epoch's pairs; returns the mean loss, penalty and pair accuracy.

    `step` counts the steps of earlier epochs: the localisers' learning rate (the optimiser's
    first group) is 0 until cfg.warmup_steps steps have been taken in all. The steps run where
    `cache` lives (see the module docstring); pass one `grad_scaler` to every epoch so that
    float16's loss scale carries over. The running sums stay on the device (float64, as exact
    as Python's floats), so a step never waits for the GPU."""
    device = cache[0].device
    if scaler is None:
        scaler = grad_scaler(device)
    net.localisers.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    min_scales = None
    if cfg.min_crop:
        min_scales = (cfg.min_crop * torch.tensor(level_inits(net.config))).to(device)
    for start in range(0, len(pairs), cfg.batch_pairs):
        optimiser.param_groups[0]["lr"] = cfg.loc_lr if step >= cfg.warmup_steps else 0.0
        step += 1
        batch = torch.from_numpy(pairs[start : start + cfg.batch_pairs])  # (P, 2)
        index = torch.cat([batch[:, 0], batch[:, 1]])  # (2P,): the a images, then the b images
        target = torch.from_numpy(labels[start : start + cfg.batch_pairs]).to(device)
        x = normalise(batch_to(pixels, index, device), net.preprocessing)
        jitter = random_jitter(len(index), net.config.scales, cfg.jitter_area, gen).to(device)
        features = [c[index.to(device)] for c in cache]
        with mixed_precision(device):
            scores, params = net.score_levels(net.pyramid(x), features, jitter)
        logits = scores[: len(batch)] - scores[len(batch) :]  # float32: the ranker's precision
        loss = viralnet_loss(logits, target, params.float(), cfg.penalty, min_scales)
        optimiser.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimiser)
        scaler.update()
        loss_sum += loss.detach().double() * len(batch)
        correct += ((logits.detach() > 0).float() == target).sum()
    n = max(1, len(pairs))
    return {"train_loss": loss_sum.item() / n, "train_acc": correct.item() / n}


def new_network(cfg: FitConfig, device: torch.device) -> ViralNet:
    """The network a fit starts from, its trunk frozen, on `device`. Its new layers are drawn
    from torch's global generator: seed that first."""
    overrides: dict[str, Any] = {"input_size": cfg.input_size, "crop_size": cfg.crop_size}
    if cfg.categories:
        overrides["categories"] = cfg.categories
    if cfg.categories == "probe":
        overrides["category_names"] = list(DANKMEMES_CATEGORIES)
    net = ViralNet(config_for_arch(cfg.arch, cfg.backbone, **overrides), pretrained=True)
    freeze_trunk(net)
    return net.to(device)


def read_scored(cfg: FitConfig) -> list[ScoredImage]:
    """The images and scores of cfg.data; ViralNet learns from scores, so a pair CSV is refused."""
    images, labelled = read_data(Path(cfg.data), cfg.data_format, cfg.on_bad_image)
    if labelled is not None:
        raise ConfigError("ViralNet trains on per-image scores (dankmemes, reddit, scores)")
    return images


def train_and_score(
    net: ViralNet, train: Encoded, test: Encoded, cfg: FitConfig, gen: torch.Generator
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Train the localisers and the ranker of `net` on pairs of `train` images for cfg.epochs
    epochs (Adam; the ranker warms up alone), and score `test` with the final epoch's network:
    no choice is made on `test`, whose pair accuracy after each epoch is only logged.
    -> the test scores (N_test,), and a history row per epoch."""
    optimiser = torch.optim.Adam(
        [
            {"params": net.localisers.parameters(), "lr": cfg.loc_lr},
            {"params": net.ranker.parameters(), "lr": cfg.lr},
        ],
        weight_decay=cfg.weight_decay,
    )
    sampler = PairSampler(
        train.scores, cfg.protocol, cfg.train_ratio, cfg.pairs_per_epoch, cfg.seed
    )
    scaler = grad_scaler(device_of(net))
    started = time.perf_counter()
    history = []
    step = 0  # optimiser steps taken, for the ranker's warm-up
    for epoch in range(cfg.epochs):
        pairs, labels = sampler.epoch(epoch)
        row = train_epoch(
            net, optimiser, train.pixels, train.cache, pairs, labels, cfg, gen, step, scaler
        )
        step += -(-len(pairs) // cfg.batch_pairs)
        row["val_acc"] = validation_metrics(
            predict(net, test.pixels, test.cache), test.scores, cfg.ratio, cfg.seed
        )["val_acc"]
        history.append({"epoch": epoch, **row, "seconds": round(time.perf_counter() - started)})
        log.info("epoch %s", history[-1])
    return predict(net, test.pixels, test.cache), history


def fit(cfg: FitConfig) -> dict[str, Any]:
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)  # the jitter's: on the CPU on any device
    device = resolve_device(cfg.device)
    # -- data: the same reader, split and pair protocol as LENA --------------------------------
    data = Path(cfg.data)
    images = read_scored(cfg)
    split = split_by_image(images, cfg.val_fraction, cfg.seed)
    # -- the network, its frozen trunk and the cached pyramid features -------------------------
    net = new_network(cfg, device)
    started = time.perf_counter()
    train, val = encode(net, split.train), encode(net, split.val)
    log.info(
        "decoded and cached %d images in %.0f s on %s",
        len(images),
        time.perf_counter() - started,
        device,
    )
    probe_record = None
    if cfg.categories == "probe":
        probe_record = fit_category_probe(net, cfg, [i.path for i in split.train], train.cache)
    # -- training: Adam on the localisers and the ranker; the final epoch's network (no
    # selection on validation), its metrics, the checkpoint -----------------------------------
    predicted, history = train_and_score(net, train, val, cfg, gen)
    metrics = {**validation_metrics(predicted, val.scores, cfg.ratio, cfg.seed), "history": history}
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
    save_checkpoint(net.cpu(), info, Path(cfg.out))
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
    probe = fit_probe(whole.mean(dim=(2, 3)).double().cpu().numpy(), labels)
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
        device=cfg.device,
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
