"""Siamese training with the loss of eq. (1); also the `viraliency-train` command.

    viraliency-train --data ../shared/data/dankmemes2020-task1 --pooling lena --out runs/lena

Phases: (1) read the data and split it by image; (2) render V augmented views of every image
once; (3) optionally push them through the frozen first blocks of the trunk and keep those
features (`--freeze-blocks`; on a CPU this is what makes fine-tuning the rest affordable);
(4) fit: each step takes a batch of pairs, scores every image of the batch in one forward pass
(each image in a randomly chosen view) and applies eq. (1) to s(a) - s(b); eta is clamped to
[0, 1] after each step; validation each epoch; the best state is kept; (5) save a checkpoint
with its calibration table and metrics.

Data-parallel under torchrun (DDP; gloo on CPU, nccl on CUDA): each rank trains on its share
of every epoch's pairs, rank 0 validates and saves.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from model.backbones import build_backbone
from model.cache import FromBlock, cached_inputs
from model.checkpoint import Calibration, CheckpointInfo, load_checkpoint, save_checkpoint
from model.data import (
    DataError,
    FixedPairs,
    LabelledPair,
    PairProtocol,
    PairSampler,
    ScoredImage,
    Split,
    index_pairs,
    ratio_pairs,
    read_dankmemes,
    read_pairs_csv,
    read_scores_csv,
    scores_array,
    split_by_image,
)
from model.evaluate import bootstrap_accuracy, validation_metrics
from model.lena import clamp_etas_
from model.network import NetworkConfig, ViralityNet, most_activated_classes, pairwise_loss

log = logging.getLogger("viraliency.train")


@dataclass
class TrainConfig:
    data: str = "../shared/data/dankmemes2020-task1"
    data_format: str = (
        "dankmemes"  # dankmemes | scores (CSV path,score) | pairs (path_a,path_b,label)
    )
    out: str = "runs/default"
    backbone: str = "mobilenet_v2"
    pooling: str = "lena"
    eta_init: float = 0.5
    objectness: int = 0  # fuse the CAMs of this many ImageNet classes (section 3.4; paper: 30)
    freeze_blocks: int = 18  # trunk blocks kept frozen and cached; 0 = train end to end
    views: int = 4  # augmented views rendered per training image
    epochs: int = 6
    batch_pairs: int = 64
    pairs_per_epoch: int = 2048
    protocol: str = "ratio"  # ratio (pairs >= train_ratio apart) | median (the paper's)
    ratio: float = 2.0  # validation pairs differ by at least this factor
    train_ratio: float = 2.0  # with protocol "ratio", training pairs differ by this factor
    optimizer: str = "adamw"  # adamw | sgd
    lr: float = 3e-5
    head_lr: float = 1e-3  # the new layers (linear head, objectness fusion) learn faster
    eta_lr: float = 1e-2  # eta moves in steps of 1/(K-1); it gets its own rate
    weight_decay: float = 1e-2
    val_fraction: float = 0.15
    seed: int = 0
    resume: str = ""  # a checkpoint folder to start from
    amp: bool = True  # bf16 autocast on CUDA
    device: str = "auto"
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class FitResult:
    model_state: dict[str, Tensor]
    history: list[dict[str, float]]
    best_val_acc: float
    best_epoch: int


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def pair_accuracy(predicted: np.ndarray, pairs: np.ndarray) -> float:
    """Share of (more viral, less viral) pairs whose predicted scores are in the same order."""
    return float((predicted[pairs[:, 0]] > predicted[pairs[:, 1]]).mean()) if len(pairs) else 0.0


@torch.no_grad()
def predict(model: nn.Module, inputs: Tensor, device: torch.device, batch: int = 128) -> np.ndarray:
    """Scores of a stack of inputs, in eval mode. (N, ...) -> (N,)"""
    was_training = model.training
    model.eval()
    out = [
        model(inputs[i : i + batch].to(device).float()).float().cpu()
        for i in range(0, len(inputs), batch)
    ]
    model.train(was_training)
    return torch.cat(out).numpy()


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Pretrained trunk at cfg.lr, new layers at cfg.head_lr, eta at cfg.eta_lr.

    No weight decay on eta (it would drag every channel towards max pooling), biases or norms.
    """
    groups: dict[str, list[nn.Parameter]] = {"trunk": [], "trunk_1d": [], "new": [], "eta": []}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.endswith("eta"):
            groups["eta"].append(p)
        elif ".trunk." in f".{name}":
            groups["trunk" if p.ndim >= 2 else "trunk_1d"].append(p)
        else:
            groups["new"].append(p)
    settings = {
        "trunk": {"lr": cfg.lr, "weight_decay": cfg.weight_decay},
        "trunk_1d": {"lr": cfg.lr, "weight_decay": 0.0},
        "new": {"lr": cfg.head_lr, "weight_decay": cfg.weight_decay},
        "eta": {"lr": cfg.eta_lr, "weight_decay": 0.0},
    }
    param_groups: list[dict[str, Any]] = [
        {"params": params, **settings[key]} for key, params in groups.items() if params
    ]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=cfg.lr, momentum=0.9)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(param_groups, lr=cfg.lr)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose adamw or sgd")


def fit(
    model: nn.Module,
    train_views: Tensor,
    train_scores: np.ndarray,
    val_inputs: Tensor,
    val_scores: np.ndarray,
    cfg: TrainConfig,
    device: torch.device | str = "cpu",
    train_pairs: FixedPairs | None = None,
    val_pairs: np.ndarray | None = None,
) -> FitResult:
    """Train `model` (inputs -> scores) on pairs of the N training inputs.

    train_views: (V, N, ...) V versions of each input; each step uses a random one per image.
    Validation: accuracy on every pair of validation inputs whose scores differ by cfg.ratio.
    With a user's labelled pairs, `train_pairs` and `val_pairs` replace the score protocols.
    """
    device = torch.device(device)
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    torch.manual_seed(cfg.seed)
    model.to(device).train()
    trained = DistributedDataParallel(model) if world > 1 else model
    if cfg.protocol not in ("median", "ratio"):
        raise ValueError(f"unknown protocol {cfg.protocol!r}; choose median or ratio")
    protocol: PairProtocol = "median" if cfg.protocol == "median" else "ratio"
    sampler: PairSampler | FixedPairs = train_pairs or PairSampler(
        train_scores, protocol, cfg.train_ratio, cfg.pairs_per_epoch, cfg.seed
    )
    if val_pairs is None:
        val_pairs = ratio_pairs(val_scores, cfg.ratio)
    opt = _optimizer(model, cfg)
    per_epoch = len(train_pairs.pairs) if train_pairs else cfg.pairs_per_epoch
    steps_per_epoch = max(1, per_epoch // world // cfg.batch_pairs)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        opt,
        max_lr=[g["lr"] for g in opt.param_groups],
        total_steps=cfg.epochs * steps_per_epoch,
        pct_start=0.1,
    )
    use_amp = cfg.amp and device.type == "cuda"
    rng = np.random.default_rng([cfg.seed, rank])
    history: list[dict[str, float]] = []
    best = FitResult(copy.deepcopy(model.state_dict()), history, -1.0, -1)
    for epoch in range(cfg.epochs):
        ab, labels = sampler.epoch(epoch)
        ab, labels = ab[rank::world], labels[rank::world]  # this rank's share
        bar = tqdm(
            range(steps_per_epoch),
            desc=f"epoch {epoch}",
            disable=None if rank == 0 else True,
            leave=False,
        )
        seen = correct = 0
        loss_sum = 0.0
        for step in bar:
            sl = slice(step * cfg.batch_pairs, (step + 1) * cfg.batch_pairs)
            images, where = np.unique(ab[sl], return_inverse=True)  # each image scored once
            view = rng.integers(0, len(train_views), size=len(images))
            x = train_views[torch.from_numpy(view), torch.from_numpy(images)].to(device).float()
            y = torch.from_numpy(labels[sl]).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                scores = trained(x).float()
            where_t = torch.from_numpy(where.reshape(-1, 2)).to(device)
            logits = scores[where_t[:, 0]] - scores[where_t[:, 1]]
            loss = pairwise_loss(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            clamp_etas_(model)
            seen += len(y)
            correct += int(((logits > 0).float() == y).sum())
            loss_sum += float(loss.detach()) * len(y)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}")
        record = {"epoch": float(epoch), "train_loss": loss_sum / seen, "train_acc": correct / seen}
        if rank == 0:
            record["val_acc"] = pair_accuracy(predict(model, val_inputs, device), val_pairs)
            if record["val_acc"] > best.best_val_acc:
                best = FitResult(
                    copy.deepcopy(model.state_dict()), history, record["val_acc"], epoch
                )
            log.info("epoch %d: %s", epoch, {k: round(v, 4) for k, v in record.items()})
        history.append(record)
    return best


def read_images(cfg: TrainConfig) -> tuple[list[ScoredImage], list[LabelledPair] | None]:
    """The images (with scores), and the user's labelled pairs when the data is a pair CSV."""
    if cfg.data_format == "dankmemes":
        return read_dankmemes(Path(cfg.data)), None
    if cfg.data_format == "scores":
        return read_scores_csv(Path(cfg.data)), None
    if cfg.data_format == "pairs":
        pairs = read_pairs_csv(Path(cfg.data))
        paths = sorted({p.path_a for p in pairs} | {p.path_b for p in pairs})
        return [ScoredImage(path, 0.0) for path in paths], pairs  # scores unused with pairs
    raise ValueError(f"unknown data format {cfg.data_format!r}; choose dankmemes, scores, pairs")


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


def build_model(cfg: TrainConfig, objectness_classes: list[int] | None = None) -> ViralityNet:
    if cfg.resume:
        net, _ = load_checkpoint(Path(cfg.resume))
        log.info("resuming from %s (fresh optimiser state)", cfg.resume)
        return net.train()
    config = NetworkConfig(cfg.backbone, cfg.pooling, cfg.eta_init, objectness_classes or [])
    return ViralityNet(config, pretrained=True)


@torch.no_grad()
def objectness_classes(model: FromBlock, views: Tensor, k: int, device: torch.device) -> list[int]:
    """The k ImageNet classes most activated on the plain views (view 0) of the training images,
    by the pretrained classifier on the pretrained trunk's features."""
    classifier = build_backbone(model.net.config.backbone, pretrained=True).classifier
    if classifier is None:
        raise ValueError(
            f"objectness needs an ImageNet classifier; {model.net.config.backbone!r} has none"
        )
    rest = model.net.trunk[model.start :].to(device).eval()  # type: ignore[index]
    plain = views[0]
    pooled = [
        rest(model.prepare(plain[i : i + 64].to(device))).mean(dim=(2, 3)).cpu()
        for i in range(0, len(plain), 64)
    ]
    classes = most_activated_classes(torch.cat(pooled), classifier, k)
    log.info("objectness: the %d most activated ImageNet classes are %s", k, classes)
    return classes


def describe_data(cfg: TrainConfig, split: Split) -> dict[str, Any]:
    data = Path(cfg.data)
    root = data / "images" if cfg.data_format == "dankmemes" else data.parent
    description: dict[str, Any] = {"source": Path(cfg.data).name, "format": cfg.data_format}
    if cfg.data_format == "dankmemes":
        description.update(DANKMEMES_DESCRIPTION)
    description["split"] = split.to_json(root)
    return description


DANKMEMES_DESCRIPTION = {
    "name": "DANKMEMES 2020 task 1 training images (1,280 of 1,600)",
    "engagement": "likes + comments of the Instagram post",
    "licence": "CC BY-NC-ND 4.0: the weights are for non-commercial use",
    "citation": "Miliani et al., DANKMEMES @ EVALITA 2020",
}


def init_distributed() -> tuple[int, int]:
    """Join the torchrun process group when there is one; returns (rank, world size)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return dist.get_rank(), dist.get_world_size()


def train(cfg: TrainConfig) -> Path | None:
    """Run the five phases; returns the checkpoint folder (rank 0) or None (other ranks)."""
    rank, world = init_distributed()
    torch.manual_seed(cfg.seed)  # before the new layers are initialised
    device = pick_device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", torch.cuda.current_device())
    # (1) data, split by image
    images, labelled = read_images(cfg)
    split = split_by_image(images, cfg.val_fraction, cfg.seed)
    train_scores, val_scores = scores_array(split.train), scores_array(split.val)
    train_pairs, val_pairs = split_pairs(labelled, split, cfg.seed) if labelled else (None, None)
    log.info(
        "rank %d of %d: %d training and %d validation images",
        rank,
        world,
        len(split.train),
        len(split.val),
    )
    # (2, 3) views, and the frozen prefix's features (rank 0 fills the cache first)
    model = FromBlock(build_model(cfg), cfg.freeze_blocks)
    for turn in range(2 if world > 1 else 1):
        if (rank == 0) == (turn == 0):
            train_inputs = cached_inputs(
                model, [i.path for i in split.train], cfg.views, cfg.seed, device
            )
            val_inputs = cached_inputs(model, [i.path for i in split.val], 1, cfg.seed, device)[0]
        if world > 1:
            dist.barrier()
    if cfg.objectness and not cfg.resume:  # same frozen prefix, so the cached inputs still hold
        classes = objectness_classes(model, train_inputs, cfg.objectness, device)
        torch.manual_seed(cfg.seed)
        model = FromBlock(build_model(cfg, classes), cfg.freeze_blocks)
    # (4) fit
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
    )
    if rank != 0:
        dist.destroy_process_group()
        return None
    # (5) the best state, calibrated on the validation images, saved with its record
    model.load_state_dict(result.model_state)
    predicted = predict(model, val_inputs, device)
    if val_pairs is None:
        metrics = validation_metrics(predicted, val_scores, cfg.ratio, cfg.seed)
    else:
        acc, lo, hi = bootstrap_accuracy(predicted, val_pairs, len(predicted), seed=cfg.seed)
        metrics = {"val_acc": acc, "val_acc_ci95": [lo, hi], "val_pairs": len(val_pairs)}
    metrics.update(best_epoch=result.best_epoch, history=result.history)
    info = CheckpointInfo(
        network=model.net.config,
        preprocessing=model.net.preprocessing,
        calibration=Calibration.from_scores(predicted),
        training={"data": describe_data(cfg, split), "config": asdict(cfg)},
        metrics=metrics,
    )
    out = Path(cfg.out)
    save_checkpoint(model.net.cpu(), info, out)
    log.info("validation: %s", {k: v for k, v in metrics.items() if k != "history"})
    if world > 1:
        dist.destroy_process_group()
    return out


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for f in fields(TrainConfig):
        if f.name == "extra":
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        else:
            parser.add_argument(flag, type=type(default), default=default)
    return TrainConfig(**vars(parser.parse_args(argv)))


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    train(parse_args(argv))


if __name__ == "__main__":
    main()
