"""Evaluation: pairwise accuracy with bootstrap confidence intervals; `viraliency-evaluate`.

    viraliency-evaluate weights --data ../shared/data/dankmemes2020-task1

Pairs share images, so the pairs are not independent samples: the bootstrap resamples
*images* (with replacement) and recomputes the accuracy over the pairs among the drawn images,
each pair weighted by how often both of its images were drawn.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.data import extreme_pairs, ratio_pairs

log = logging.getLogger("viraliency.evaluate")


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
    accs = resampled_accuracy(predicted, pairs, counts)
    tail = (1.0 - level) / 2
    lo, hi = np.nanquantile(accs, [tail, 1.0 - tail])
    return resampled_accuracy(predicted, pairs, np.ones((1, n_images)))[0], float(lo), float(hi)


def resampled_accuracy(predicted: np.ndarray, pairs: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Pair accuracy when image i is drawn counts[r, i] times, for each resample r. -> (R,)

    A pair (a, b) then occurs counts[r, a] * counts[r, b] times; NaN where no pair was drawn.
    """
    a, b = pairs[:, 0], pairs[:, 1]
    correct = (predicted[a] > predicted[b]).astype(np.float64)
    weight = counts[:, a] * counts[:, b]  # (R, P)
    total = weight.sum(axis=1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (weight @ correct) / total, np.nan)


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


def main(argv: list[str] | None = None) -> None:
    """Evaluate a checkpoint on the validation split it recorded."""
    from model.cache import FromBlock, cached_inputs
    from model.checkpoint import load_checkpoint
    from model.data import read_dankmemes, scores_array, split_from_json
    from model.train import pick_device, predict

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/dankmemes2020-task1"))
    parser.add_argument("--ratio", type=float, default=2.0)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    net, info = load_checkpoint(args.checkpoint)
    split = split_from_json(
        info.training["data"]["split"], read_dankmemes(args.data), args.data / "images"
    )
    device = pick_device(args.device)
    model = FromBlock(net, 0)
    inputs = cached_inputs(model, [i.path for i in split.val], 1, 0, device)[0]
    with torch.no_grad():
        predicted = predict(model, inputs, device)
    print(json.dumps(validation_metrics(predicted, scores_array(split.val), args.ratio), indent=2))


if __name__ == "__main__":
    main()
