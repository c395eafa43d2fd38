"""Evaluation: pairwise accuracy with bootstrap confidence intervals; `viraliency-evaluate`.

    viraliency-evaluate weights --data ../shared/data/dankmemes2020-task1
    viraliency-evaluate runs/mine --data my/scores.csv --data-format scores
    viraliency-evaluate weights/viralnet       # any architecture the checkpoint format holds

Pairs share images, so the pairs are not independent samples: the bootstrap resamples
*images* (with replacement) and recomputes the accuracy over the pairs among the drawn images,
each pair weighted by how often both of its images were drawn.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any, get_args

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from model.checkpoint import CheckpointError, Network, load_network
from model.devices import DeviceError, resolve_device
from model.images import normalise
from training.accuracy import pair_accuracy
from training.cache import render_views
from training.data import (
    DATA_FORMATS,
    BadImagePolicy,
    DataError,
    read_data,
    scores_array,
    split_from_json,
    split_root,
)
from training.pairs import extreme_pairs, index_pairs, ratio_pairs

log = logging.getLogger("viraliency.evaluate")


@torch.no_grad()
def predict(model: nn.Module, inputs: Tensor, device: torch.device, batch: int = 128) -> np.ndarray:
    """Scores of a stack of inputs, in eval mode. (N, ...) -> (N,)"""
    was_training = model.training
    model.eval()
    out = [
        model(inputs[i : i + batch].to(device).float()).float().cpu()
        for i in tqdm(range(0, len(inputs), batch), desc="scoring", leave=False, disable=None)
    ]
    model.train(was_training)
    return torch.cat(out).numpy()


class OnViews(nn.Module):
    """A checkpoint's network, LENA or ViralNet, on uint8 views. (N, S, S, 3) -> (N,)"""

    def __init__(self, net: Network) -> None:
        super().__init__()
        self.net = net

    def forward(self, views: Tensor) -> Tensor:
        return self.net(normalise(views, self.net.preprocessing))


def bootstrap_accuracy(
    predicted: np.ndarray,
    pairs: np.ndarray,
    n_images: int,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """Accuracy on `pairs` (more viral first) and its bootstrap interval, resampling images."""
    if len(pairs) == 0:
        raise ValueError("no pairs to evaluate")
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n_images, np.full(n_images, 1.0 / n_images), size=n_boot)  # (R, n)
    accs = pair_accuracy(predicted, pairs, counts)
    tail = (1.0 - level) / 2
    lo, hi = np.nanquantile(accs, [tail, 1.0 - tail])
    return pair_accuracy(predicted, pairs), float(lo), float(hi)


def validation_metrics(
    predicted: np.ndarray, truth: np.ndarray, ratio: float = 2.0, seed: int = 0
) -> dict[str, Any]:
    """The two protocols on held-out images: pairs >= ratio apart, and top-k vs bottom-k."""
    n = len(truth)
    by_ratio = ratio_pairs(truth, ratio)
    acc, lo, hi = bootstrap_accuracy(predicted, by_ratio, n, seed=seed)
    k = max(1, n // 5)
    extremes = extreme_pairs(truth, k)
    acc_x, lo_x, hi_x = bootstrap_accuracy(predicted, extremes, n, seed=seed)
    return {
        "val_images": n,
        "ratio": ratio,
        "val_acc": acc,
        "val_acc_ci95": [lo, hi],
        "val_pairs": len(by_ratio),
        "extreme_k": k,
        "val_acc_extreme": acc_x,
        "val_acc_extreme_ci95": [lo_x, hi_x],
    }


def held_out_metrics(
    predicted: np.ndarray,
    truth: np.ndarray,
    pairs: np.ndarray | None,
    ratio: float = 2.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Metrics on the validation images: the score protocols (see validation_metrics), or,
    for a user's labelled pairs, the accuracy on the pairs with both images in validation."""
    if pairs is None:
        return validation_metrics(predicted, truth, ratio, seed)
    acc, lo, hi = bootstrap_accuracy(predicted, pairs, len(predicted), seed=seed)
    return {
        "val_images": len(predicted),
        "val_acc": acc,
        "val_acc_ci95": [lo, hi],
        "val_pairs": len(pairs),
    }


def evaluate_checkpoint(
    checkpoint: Path,
    data: Path | None = None,
    data_format: str | None = None,
    ratio: float = 2.0,
    on_bad_image: BadImagePolicy = "error",
    device_name: str = "auto",
) -> dict[str, Any]:
    """Metrics of a checkpoint (any arch) on the validation images of the split it recorded.

    `data` and `data_format` default to those the checkpoint was trained on; any layout that
    training reads works (DANKMEMES folder, `path,score` CSV, `path_a,path_b,label` CSV).
    """
    device = resolve_device(device_name)
    net, info = load_network(checkpoint, device)
    recorded = info.training.get("config", {})
    data = Path(data if data is not None else recorded.get("data", ""))
    data_format = data_format or recorded.get("data_format") or "dankmemes"
    split_record = info.training.get("data", {}).get("split")
    if split_record is None:
        raise CheckpointError(
            f"{checkpoint} records no train/validation split (training.data.split), so its "
            f"held-out images are unknown"
        )
    images, labelled = read_data(data, data_format, on_bad_image)
    split = split_from_json(split_record, images, split_root(data, data_format))
    val_paths = [i.path for i in split.val]
    # The plain squashed view of each image, as both fits score their validation images.
    views = render_views(val_paths, net.preprocessing.input_size, 1, 0)[0]
    predicted = predict(OnViews(net), views, device)
    pairs = None if labelled is None else index_pairs(labelled, val_paths)[0]
    if pairs is not None and not len(pairs):
        raise DataError(f"{data}: no labelled pair has both images in the validation split")
    # The training seed also seeds the bootstrap, so the checkpoint's own numbers come back.
    seed = int(recorded.get("seed", 0))
    return held_out_metrics(predicted, scores_array(split.val), pairs, ratio, seed)


def main(argv: list[str] | None = None) -> None:
    """Evaluate a checkpoint on the validation split it recorded."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("checkpoint", type=Path, help="a checkpoint folder (config.json + weights)")
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="the DANKMEMES folder or the CSV (default: what the checkpoint was trained on)",
    )
    parser.add_argument(
        "--data-format",
        choices=DATA_FORMATS,
        default=None,
        help="dankmemes, scores (path,score) or pairs (path_a,path_b,label); default: the "
        "checkpoint's",
    )
    parser.add_argument(
        "--ratio", type=float, default=2.0, help="validation pairs differ by at least this factor"
    )
    parser.add_argument(
        "--on-bad-image",
        choices=get_args(BadImagePolicy),
        default="error",
        help="a missing or undecodable image stops the evaluation (error) or is left out (skip)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        with logging_redirect_tqdm():  # log lines above the progress bars, not through them
            metrics = evaluate_checkpoint(
                args.checkpoint,
                args.data,
                args.data_format,
                args.ratio,
                args.on_bad_image,
                args.device,
            )
    except (DataError, CheckpointError, DeviceError) as exc:
        raise SystemExit(f"viraliency-evaluate: error: {exc}") from exc
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
