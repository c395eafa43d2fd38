"""Fit the recipe that cross-validation chose on ALL images and write the checkpoint.

    python -m training.ship --data dankmemes=../shared/data/dankmemes2020-task1 \\
        --data reddit=../shared/data/reddit-memes-2016-2018 --recipe "LENA eta 1" --out weights

(1) the recipe's k-fold out-of-fold scores (training/crossval.py): the calibration table for
`percentile` (every image scored by a model that never saw it) and the recorded CV metrics;
(2) the recipe fitted on every image of every dataset (no validation split is wasted once CV
fixed the recipe; a fold ensemble's members are stacked into one network, model/ensemble.py);
(3) the checkpoint: config.json + model.safetensors, with the data, licences and folds.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.checkpoint import Calibration, CheckpointInfo, load_checkpoint, save_checkpoint
from model.ensemble import stack_members
from training.crossval import (
    RECIPES,
    Dataset,
    fit_sets,
    fold_summary,
    load_dataset,
    out_of_fold,
    platform_name,
)
from training.data import DESCRIPTIONS
from training.recipes import Recipe

log = logging.getLogger("viraliency.ship")


def summary(sets: list[Dataset]) -> tuple[str, str]:
    """(data, licence): one line each, as `/model` and the web page show them."""
    names = [DESCRIPTIONS.get(d.name, {}).get("name", d.name) for d in sets]
    licences = [DESCRIPTIONS.get(d.name, {}).get("licence", "unknown") for d in sets]
    if len(sets) == 1:
        return names[0], licences[0]
    each = "; ".join(f"{d.name}: {licence}" for d, licence in zip(sets, licences, strict=True))
    return " + ".join(names), "the most restrictive applies; " + each


def describe(sets: list[Dataset]) -> dict[str, Any]:
    return {
        d.name: {
            **DESCRIPTIONS.get(d.name, {}),
            "images": len(d.scores),
            "folds": d.folds.to_json(d.root),
        }
        for d in sets
    }


def ship(specs: list[str], recipe_name: str, out: Path, k: int, seed: int, cache: Path) -> Path:
    """Read and cache the datasets (`FORMAT=PATH`), then ship_sets."""
    started = time.monotonic()
    recipe = RECIPES[recipe_name]
    sets = [load_dataset(spec, k, seed, cache, {recipe.input_size}) for spec in specs]
    return ship_sets(sets, recipe, out, seed, time.monotonic() - started)


def ship_sets(
    sets: list[Dataset], recipe: Recipe, out: Path, seed: int, features_s: float = 0.0
) -> Path:
    """Out-of-fold calibration and metrics, the fit on every image, the checkpoint."""
    started = time.monotonic() - features_s
    if recipe.pooling == "ridge" or recipe.tta or recipe.sizes or recipe.viralnet:
        raise ValueError(
            f"{recipe.name!r} cannot be shipped: the service runs one network on the plain image"
        )
    oof = out_of_fold(recipe, sets, seed)
    metrics = {d.name: fold_summary(oof[d.name], d) for d in sets}
    _, members = fit_sets(recipe, sets, [np.arange(len(d.scores)) for d in sets], seed)
    net = stack_members(members) if len(members) > 1 else members[0]
    calibration = Calibration.from_scores(np.concatenate([oof[d.name] for d in sets]))
    by_platform: dict[str, Calibration] = {}
    given: dict[str, Any] = {}  # CV of each platform's own head, for callers that name it
    if net.config.platforms:
        given, by_platform = _platform_metrics(recipe, sets, seed)
    seconds = time.monotonic() - started
    data, licence = summary(sets)
    info = CheckpointInfo(
        network=net.config,
        preprocessing=net.preprocessing,
        calibration=calibration,
        training={
            "data": data,
            "licence": licence,
            "datasets": describe(sets),
            "recipe": asdict(recipe),
            "trunk": "MobileNetV2 ImageNet weights, every block frozen; "
            + (
                "each member's head is the ridge fit on its pooled features, eta fixed"
                if recipe.epochs == 0
                else "eta and head trained on pairs"
            ),
            "calibration": "quantiles of the out-of-fold scores of every image",
            "seed": seed,
            "seconds": {"features": features_s, "total": seconds},
        },
        metrics={"crossval": metrics, **({"crossval_platform_given": given} if given else {})},
        platform_calibration=by_platform,
    )
    save_checkpoint(net, info, out)
    load_checkpoint(out)  # refuse to leave a checkpoint the service could not load
    log.info(
        "shipped %r to %s in %.0f s: %s",
        recipe.name,
        out,
        seconds,
        {n: m["mean"] for n, m in metrics.items()},
    )
    return out


def _platform_metrics(
    recipe: Recipe, sets: list[Dataset], seed: int
) -> tuple[dict[str, Any], dict[str, Calibration]]:
    """Per-platform heads: each platform's head is the recipe fitted on its dataset alone, so
    its CV metrics are the within-dataset ones. Its percentiles read the out-of-fold scores
    standardised like the head's own (mean 0, sd 1 over the platform's images)."""
    metrics: dict[str, Any] = {}
    by_platform = {}
    for d in sets:
        own = out_of_fold(recipe, [d], seed)[d.name]
        metrics[platform_name(d.name)] = fold_summary(own, d)
        by_platform[platform_name(d.name)] = Calibration.from_scores((own - own.mean()) / own.std())
    return metrics, by_platform


def main(argv: list[str] | None = None) -> None:
    """Fit the chosen recipe on all images and save the checkpoint."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--data", action="append", required=True, help="FORMAT=PATH")
    parser.add_argument("--recipe", choices=list(RECIPES), required=True)
    parser.add_argument("--out", type=Path, default=Path("weights"))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=Path("cache"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    ship(args.data, args.recipe, args.out, args.folds, args.seed, args.cache)


if __name__ == "__main__":
    main()
