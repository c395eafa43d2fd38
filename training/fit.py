"""The fit loop: pairs of training images, eq. (1) on s(a) - s(b), validation every epoch.

Each step takes `batch_pairs` pairs, scores every image of the batch in one forward pass (each
image in a randomly chosen view), and applies

    L = BCE-with-logits(s(a) - s(b), v)                               eq. (1)

then clamps every eta to [0, 1]. Under torchrun (DDP) each rank trains on its share of every
epoch's pairs and rank 0 validates; the best state (by validation pair accuracy) is kept.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from model.lena import clamp_etas_
from model.network import pairwise_loss
from training.accuracy import pair_accuracy
from training.cache import state_digest
from training.config import TrainConfig
from training.evaluate import predict
from training.pairs import FixedPairs, PairSampler, ratio_pairs

log = logging.getLogger("viraliency.train.fit")


@dataclass
class FitResult:
    model_state: dict[str, Tensor]
    history: list[dict[str, float]]
    best_val_acc: float
    best_epoch: int
    # Fingerprints of this rank's run: DDP ranks must end with equal parameters after training
    # on different pairs; the torchrun test compares them.
    param_digest: str = ""
    pairs_digest: str = ""


OnBest = Callable[[FitResult, np.ndarray], None]  # (new best, its validation scores)


def use_amp(cfg: TrainConfig, device: torch.device) -> bool:
    """bf16 autocast on CUDA GPUs that support it; older GPUs (before Ampere) train in fp32."""
    if not cfg.amp or device.type != "cuda":
        return False
    if not torch.cuda.is_bf16_supported():
        log.warning("this GPU has no bf16 support: mixed precision is off, training in fp32")
        return False
    return True


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
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
    settings: dict[str, dict[str, Any]] = {
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
    return torch.optim.AdamW(param_groups, lr=cfg.lr)


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
    first_epoch: int = 0,
    on_best: OnBest | None = None,
) -> FitResult:
    """Train `model` (inputs -> scores) on pairs of the N training inputs.

    train_views: (V, N, ...) V versions of each input; each step uses a random one per image.
    Validation: accuracy on every pair of validation inputs whose scores differ by cfg.ratio.
    With a user's labelled pairs, `train_pairs` and `val_pairs` replace the score protocols.
    Epochs are numbered from `first_epoch` (a resumed run draws new pairs, not epoch 0's
    again); `on_best` is called on rank 0 each time validation improves, e.g. to save.
    """
    device = torch.device(device)
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    torch.manual_seed(cfg.seed)
    model.to(device).train()
    trained = DistributedDataParallel(model) if world > 1 else model
    sampler: PairSampler | FixedPairs = train_pairs or PairSampler(
        train_scores, cfg.protocol, cfg.train_ratio, cfg.pairs_per_epoch, cfg.seed
    )
    if val_pairs is None:
        val_pairs = ratio_pairs(val_scores, cfg.ratio)
    opt = make_optimizer(model, cfg)
    per_epoch = len(train_pairs.pairs) if train_pairs else cfg.pairs_per_epoch
    steps_per_epoch = max(1, per_epoch // world // cfg.batch_pairs)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        opt,
        max_lr=[g["lr"] for g in opt.param_groups],
        total_steps=cfg.epochs * steps_per_epoch,
        pct_start=0.1,
    )
    amp = use_amp(cfg, device)
    rng = np.random.default_rng([cfg.seed, rank])
    history: list[dict[str, float]] = []
    best = FitResult(copy.deepcopy(model.state_dict()), history, -1.0, -1)
    pairs_seen = hashlib.sha256()
    for epoch in range(first_epoch, first_epoch + cfg.epochs):
        ab, labels = sampler.epoch(epoch)
        ab, labels = ab[rank::world], labels[rank::world]  # this rank's share
        pairs_seen.update(ab[: steps_per_epoch * cfg.batch_pairs].tobytes())
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
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
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
        history.append(record)
        if rank != 0:
            continue
        predicted = predict(model, val_inputs, device)
        record["val_acc"] = pair_accuracy(predicted, val_pairs)
        log.info("epoch %d: %s", epoch, {k: round(v, 4) for k, v in record.items()})
        if record["val_acc"] > best.best_val_acc:
            best = FitResult(copy.deepcopy(model.state_dict()), history, record["val_acc"], epoch)
            if on_best is not None:
                on_best(best, predicted)
    best.param_digest = state_digest(model.state_dict())
    best.pairs_digest = pairs_seen.hexdigest()
    return best
