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
of every epoch's pairs, rank 0 validates and saves. The best state is written to `--out` each
time it improves, so a killed run leaves a usable checkpoint that `--resume` continues from.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from model.backbones import build_backbone
from model.checkpoint import (
    Calibration,
    CheckpointError,
    CheckpointInfo,
    load_checkpoint,
    read_info,
    save_checkpoint,
)
from model.lena import clamp_etas_
from model.network import NetworkConfig, ViralityNet, most_activated_classes, pairwise_loss
from training.cache import FromBlock, cached_inputs, state_digest
from training.data import (
    DATA_FORMATS,
    BadImagePolicy,
    DataError,
    LabelledPair,
    ScoredImage,
    Split,
    read_data,
    scores_array,
    split_by_image,
    split_from_json,
    split_root,
)
from training.evaluate import held_out_metrics
from training.pairs import FixedPairs, PairProtocol, PairSampler, index_pairs, ratio_pairs
from training.ridge import fit_ridge

log = logging.getLogger("viraliency.train")


@dataclass
class TrainConfig:
    data: str = "../shared/data/dankmemes2020-task1"
    data_format: str = field(
        default="dankmemes",
        metadata={
            "choices": DATA_FORMATS,
            "help": "dankmemes (labels.csv + images/), scores (CSV path,score) or pairs "
            "(CSV path_a,path_b,label)",
        },
    )
    on_bad_image: str = field(
        default="error",
        metadata={
            "choices": ("error", "skip"),
            "help": "a missing or undecodable image stops the run (error), or its rows are "
            "left out and counted in the log (skip)",
        },
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
    head_init: str = field(
        default="random",
        metadata={
            "choices": ("random", "ridge"),
            "help": "ridge: start the linear head from a ridge regression of log engagement on "
            "the training images' pooled features (training/ridge.py) instead of at random",
        },
    )
    eta_lr: float = 1e-2  # eta moves in steps of 1/(K-1); it gets its own rate
    weight_decay: float = 1e-2
    val_fraction: float = 0.15
    seed: int = 0
    resume: str = field(
        default="",
        metadata={
            "help": "a checkpoint folder to continue from: its weights, network (backbone, "
            "pooling, eta init, objectness) and recorded train/validation split are kept, and "
            "epochs continue after its last one; the optimiser and LR schedule start afresh"
        },
    )
    amp: bool = True  # bf16 autocast on CUDA, when the GPU supports bf16
    device: str = "auto"
    extra: dict[str, Any] = field(default_factory=dict)


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


class ConfigError(ValueError):
    """Training flags that contradict each other or the checkpoint being resumed."""


OnBest = Callable[[FitResult, np.ndarray], None]  # (new best, its validation scores)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def use_amp(cfg: TrainConfig, device: torch.device) -> bool:
    """bf16 autocast on CUDA GPUs that support it; older GPUs (before Ampere) train in fp32."""
    if not cfg.amp or device.type != "cuda":
        return False
    if not torch.cuda.is_bf16_supported():
        log.warning("this GPU has no bf16 support: mixed precision is off, training in fp32")
        return False
    return True


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


def bad_image_policy(name: str) -> BadImagePolicy:
    if name not in ("error", "skip"):
        raise ConfigError(f"on_bad_image must be 'error' or 'skip', got {name!r}")
    return "skip" if name == "skip" else "error"


def read_images(cfg: TrainConfig) -> tuple[list[ScoredImage], list[LabelledPair] | None]:
    """The images (with scores), and the user's labelled pairs when the data is a pair CSV."""
    return read_data(Path(cfg.data), cfg.data_format, bad_image_policy(cfg.on_bad_image))


# --------------------------------------------------------------------------------------------
# Resuming: the checkpoint decides the network and the split
# --------------------------------------------------------------------------------------------


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
        log.info("resuming from %s (fresh optimiser and LR schedule)", cfg.resume)
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


@torch.no_grad()
def init_head_from_ridge(
    model: FromBlock, inputs: Tensor, scores: np.ndarray, ratio: float, device: torch.device
) -> None:
    """Set the head to the ridge fit of log engagement on the pooled features of `inputs`
    (the plain view of each training image), so training starts from the linear probe."""
    model.to(device).eval()
    pooled = torch.cat(
        [
            model.net.pool(model.feature_maps(inputs[i : i + 128].to(device))).float().cpu()
            for i in range(0, len(inputs), 128)
        ]
    )  # (N, L)
    probe = fit_ridge(pooled.double().numpy(), scores, ratio)
    head = model.net.head
    head.weight.copy_(torch.from_numpy(probe.weight).to(head.weight)[None])
    head.bias.fill_(probe.bias)
    log.info("head initialised by ridge regression (lambda %g)", probe.penalty)


def describe_data(cfg: TrainConfig, split: Split) -> dict[str, Any]:
    root = split_root(Path(cfg.data), cfg.data_format)
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


def distributed_backend(device: torch.device) -> str:
    """nccl for CUDA tensors, gloo for CPU ones: the training device decides, not the host."""
    return "nccl" if device.type == "cuda" else "gloo"


def init_distributed(device: torch.device) -> tuple[int, int]:
    """Join the torchrun process group when there is one; returns (rank, world size)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    dist.init_process_group(distributed_backend(device))
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return dist.get_rank(), dist.get_world_size()


def train(cfg: TrainConfig) -> Path | None:
    """Run the five phases; returns the checkpoint folder (rank 0) or None (other ranks)."""
    device = pick_device(cfg.device)
    rank, world = init_distributed(device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", torch.cuda.current_device())
    torch.manual_seed(cfg.seed)  # before the new layers are initialised
    if cfg.head_init == "ridge" and cfg.data_format == "pairs":
        raise ConfigError("--head-init ridge fits per-image scores, which pair data does not have")
    resumed = read_info(Path(cfg.resume)) if cfg.resume else None
    if resumed is not None:
        check_resume_network(cfg, resumed)
    # (1) data, split by image (a resumed run keeps its checkpoint's split)
    images, labelled = read_images(cfg)
    if resumed is None:
        split = split_by_image(images, cfg.val_fraction, cfg.seed)
    else:
        split = resumed_split(cfg, resumed, images)
        cfg = replace(cfg, val_fraction=split.val_fraction)
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
        dist.destroy_process_group()
        return None
    # The best state again, now with the whole history.
    model.load_state_dict(result.model_state)
    out = save_run(
        model, predict(model, val_inputs, device), val_scores, val_pairs, split, result, cfg
    )
    if world > 1:
        dist.destroy_process_group()
    return out


def save_run(
    model: FromBlock,
    predicted: np.ndarray,
    val_scores: np.ndarray,
    val_pairs: np.ndarray | None,
    split: Split,
    result: FitResult,
    cfg: TrainConfig,
) -> Path:
    """Save the model's current state (the best so far) to cfg.out, calibrated on the
    validation images' scores `predicted`, with its metrics and training record."""
    metrics = held_out_metrics(predicted, val_scores, val_pairs, cfg.ratio, cfg.seed)
    metrics.update(best_epoch=result.best_epoch, history=list(result.history))
    info = CheckpointInfo(
        network=model.net.config,
        preprocessing=model.net.preprocessing,
        calibration=Calibration.from_scores(predicted),
        training={"data": describe_data(cfg, split), "config": asdict(cfg)},
        metrics=metrics,
    )
    out = Path(cfg.out)
    save_checkpoint(model.net, info, out)
    log.info(
        "best so far (epoch %d): %s",
        result.best_epoch,
        {k: v for k, v in metrics.items() if k != "history"},
    )
    return out


def _parser(defaults: bool = True) -> argparse.ArgumentParser:
    """One flag per TrainConfig field; `choices` and `help` come from the field's metadata.

    With `defaults=False` a flag left out is absent from the result, which tells which flags
    the user gave.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for f in fields(TrainConfig):
        if f.name == "extra":
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        options: dict[str, Any] = {
            **f.metadata,
            "default": default if defaults else argparse.SUPPRESS,
        }
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **options)
        else:
            parser.add_argument(flag, type=type(default), **options)
    return parser


def _given_flags(argv: list[str] | None) -> set[str]:
    """The TrainConfig fields set on the command line (as opposed to left at their default)."""
    return set(vars(_parser(defaults=False).parse_args(argv)))


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """The config; with --resume, network flags not given default to the checkpoint's own."""
    cfg = TrainConfig(**vars(_parser().parse_args(argv)))
    if cfg.resume:
        given = _given_flags(argv)
        recorded = network_settings(read_info(Path(cfg.resume)))
        cfg = replace(cfg, **{k: v for k, v in recorded.items() if k not in given})
    return cfg


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        train(parse_args(argv))
    except (ConfigError, DataError, CheckpointError) as exc:
        # The user's data or flags: the message says what to fix; a traceback would bury it.
        raise SystemExit(f"viraliency-train: error: {exc}") from exc


if __name__ == "__main__":
    main()
