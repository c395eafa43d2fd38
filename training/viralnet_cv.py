"""ViralNet with learned crops, cross-validated on LENA's folds with crossval's metrics.

    python -m training.viralnet_cv --data ../shared/data/dankmemes2020-task1 \\
        --data-format dankmemes --k 5 --seed 0 --device cuda --out runs/cv/dankmemes.json \\
        --input-size 160 --crop-size 112 --epochs 6

`training.crossval` scores ViralNet only at its initial crops (training/viralnet_table.py):
learning the crops needs a trunk pass per step, which its cached inputs cannot give. This runs
the learned-crop fit under the same protocol instead:

    folds    make_folds(images, k, seed): crossval's folds for the same images, k and seed
             (its defaults: --folds 5, --seed 0, which --k and --seed here default to too)
    fold i   a network trained by `viralnet_fit.train_and_score` on the other folds' images,
             from the same initial weights and seed every fold, scoring fold i's images
    metrics  crossval's fold_metrics on each fold, and its summarise: mean, sd, 95% t interval

Each image is scored once, by the model of the fold that held it out; each fold's accuracies
use its own model's scores only. The report has crossval's layout ({"folds", "seed",
"results": {recipe: {"within": {dataset: summary}}}}), so crossval's `table` prints it, plus
each fold's training history and every image's out-of-fold score.

Flags: --k (or --folds), --out (the JSON report), and the ViralNet flags of viraliency-train
(`viraliency-train --help`; --arch defaults to viralnet-m here). --seed seeds the folds and
the training, as in crossval; --val-fraction is unused (each fold's test images are held out).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.devices import DeviceError, resolve_device
from model.viralnet import ViralNet
from training.config import ConfigError, given_flags, make_config
from training.crossval import fold_metrics, summarise, table
from training.data import DataError, scores_array, split_root
from training.folds import Folds, make_folds
from training.viralnet_fit import (
    Encoded,
    FitConfig,
    encode,
    fit_category_probe,
    fit_config,
    new_network,
    read_scored,
    train_and_score,
)

log = logging.getLogger("viraliency.viralnet_cv")


def recipe_name(cfg: FitConfig) -> str:
    """The report's row name, e.g. "ViralNet-M, learned crops (3 epochs, 128/64 px, localisers
    at lr 0.001 after 32 steps)". A run whose localisers never move (lr 0, or a ranker warm-up
    as long as the run) is named for its initial crops instead: it measures the ranker there."""
    suffix = cfg.arch.removeprefix("viralnet").upper()
    probe = " (DANKMEMES category probe)" if cfg.categories == "probe" else ""
    size = f"{cfg.epochs} epochs, {cfg.input_size}/{cfg.crop_size} px"
    steps = cfg.epochs * -(-cfg.pairs_per_epoch // cfg.batch_pairs)
    if cfg.loc_lr == 0 or cfg.warmup_steps >= steps:
        return f"ViralNet{suffix}{probe}, initial crops, Adam ranker ({size})"
    schedule = f"localisers at lr {cfg.loc_lr:g} after {cfg.warmup_steps} steps"
    return f"ViralNet{suffix}{probe}, learned crops ({size}, {schedule})"


def cross_validate(cfg: FitConfig, k: int) -> dict[str, Any]:
    """Train and score ViralNet on each of the k folds of cfg.data; the report (see above)."""
    torch.manual_seed(cfg.seed)  # the new layers, drawn once: every fold starts from them
    device = resolve_device(cfg.device)
    images = read_scored(cfg)
    folds = make_folds(images, k, cfg.seed)
    net = new_network(cfg, device)
    initial = {name: t.clone() for name, t in net.state_dict().items()}
    started = time.perf_counter()
    everything = encode(net, images)  # the trunk is frozen: one cache serves every fold
    log.info("decoded and cached %d images in %.0f s", len(images), time.perf_counter() - started)
    predicted = np.full(len(images), np.nan)
    runs = []
    for i in range(k):
        net.load_state_dict(initial)
        scores, history = fit_fold(net, cfg, everything, folds, i)
        predicted[folds.test(i)] = scores
        runs.append({"fold": i, "train_images": len(folds.train(i)), "history": history})
        acc, extreme = fold_metrics(scores, everything.scores[folds.test(i)])
        log.info("fold %d of %d: >= 2x %.4f, top/bottom %.4f", i + 1, k, acc, extreme)
    return report(cfg, folds, predicted, runs, time.perf_counter() - started)


def fit_fold(
    net: ViralNet, cfg: FitConfig, everything: Encoded, folds: Folds, i: int
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Fold i's scores by `net` trained on the other folds (its category probe too, if any:
    the held-out labels never reach it), and the training history."""
    train = everything.subset(folds.train(i))
    if cfg.categories == "probe":
        paths = [folds.images[j].path for j in folds.train(i)]
        fit_category_probe(net, cfg, paths, train.cache)
    gen = torch.Generator().manual_seed(cfg.seed)  # the jitter, as fit draws it
    return train_and_score(net, train, everything.subset(folds.test(i)), cfg, gen)


def report(
    cfg: FitConfig,
    folds: Folds,
    predicted: np.ndarray,
    runs: list[dict[str, Any]],
    seconds: float,
) -> dict[str, Any]:
    """crossval's report layout for one recipe on one dataset, plus the histories and scores."""
    truth = scores_array(folds.images)
    tests = [folds.test(i) for i in range(folds.k)]
    summary = summarise([fold_metrics(predicted[t], truth[t]) for t in tests])
    root = split_root(Path(cfg.data), cfg.data_format).resolve()  # as the images' paths are
    names = [image.path.relative_to(root).as_posix() for image in folds.images]
    dataset = cfg.data_format  # crossval names a dataset by its format
    result = {
        "config": asdict(cfg),
        "within": {dataset: summary},
        "seconds": seconds,
        "fold_runs": runs,
        "out_of_fold": {dataset: dict(zip(names, predicted.tolist(), strict=True))},
    }
    name = recipe_name(cfg)
    return {
        "folds": {dataset: folds.to_json(root)},
        "seed": folds.seed,
        "results": {name: result},
        "table": table({name: result}, [dataset]),
    }


def parse_args(argv: Sequence[str]) -> tuple[FitConfig, int, Path]:
    """(the fit's config, k, the report's path): --k and --out here, the rest viraliency-train's
    flags (their checks included: a LENA-only flag is refused)."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="Any other flag is viraliency-train's (viraliency-train --help).",
        allow_abbrev=False,  # an abbreviation must not swallow a viraliency-train flag
    )
    parser.add_argument("--k", "--folds", type=int, default=5, help="folds (crossval's --folds)")
    parser.add_argument("--out", type=Path, required=True, help="the JSON report")
    own, rest = parser.parse_known_args(list(argv))
    if own.k < 2:
        parser.error(f"--k: k-fold cross-validation needs k >= 2, got {own.k}")
    cfg = make_config({"arch": "viralnet-m", **given_flags(rest)})
    if cfg.arch == "lena":
        raise ConfigError("this cross-validates ViralNet: choose --arch viralnet* (LENA: crossval)")
    return fit_config(cfg), own.k, own.out


def main(argv: Sequence[str] | None = None) -> None:
    """Cross-validate ViralNet with learned crops; write the report and print its table."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        cfg, k, out = parse_args(sys.argv[1:] if argv is None else argv)
        result = cross_validate(cfg, k)
    except (ConfigError, DataError, DeviceError) as exc:
        raise SystemExit(f"viralnet_cv: error: {exc}") from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(result["table"])


if __name__ == "__main__":
    main()
