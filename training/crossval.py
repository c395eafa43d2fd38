"""k-fold cross-validation of every recipe on frozen features; prints the model card's table.

    python -m training.crossval --data dankmemes=../shared/data/dankmemes2020-task1 \\
        --data reddit=../shared/data/reddit-memes-2016-2018 --folds 5 --out weights/report

For each dataset, each recipe (training/recipes.py) is fitted k times, on all but one fold of
images, and scored on the held-out fold; per fold:

    acc_2x  = pair accuracy on every held-out pair whose engagement differs >= 2x (after +1)
    acc_x   = the paper's protocol: every top-k vs bottom-k pair, k = n_fold // 5

reported as the mean over folds, the standard deviation and a 95% t interval of the mean
(training/folds.py). Each fold is scored by its own model, so scores of different folds are
never compared. "both" trains on the two datasets together (log engagement standardised per
dataset: training/joint.py) on the same folds and scores each dataset's held-out fold.
Cross-domain fits a recipe on all of one dataset and scores all of the other, summarised over
the other's folds like the rest.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Collection
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from model.network import NetworkConfig, ViralityNet
from training.accuracy import pair_accuracy
from training.cache import FromBlock, cached_inputs
from training.categories import cross_fitted, fit_probe, probe_outputs
from training.data import (
    DESCRIPTIONS,
    read_dankmemes,
    read_dankmemes_categories,
    read_reddit,
    scores_array,
    split_root,
)
from training.folds import Folds, make_folds, mean_and_interval
from training.joint import joint_scores
from training.pairs import extreme_pairs, ratio_pairs
from training.platforms import PlatformData, fit_platforms
from training.recipes import FROZEN, Recipe, Scorer, fit_recipe, score_views
from training.tables import top_mean_table
from training.viralnet_table import cached_ranker_inputs, whole_image_features

log = logging.getLogger("viraliency.crossval")

VIEWS = 2  # the plain image, as the service scores it, and its mirror (`Recipe.tta` only)

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe("ridge probe", pooling="ridge"),
        Recipe("ridge probe + mirror TTA", pooling="ridge", tta=True),
        Recipe("GAP", pooling="gap"),
        Recipe("GMP", pooling="gmp"),
        Recipe("GNAP (eta 0.5 fixed)", pooling="gnap"),
        Recipe("LENA eta 0", eta_init=0.0),
        Recipe("LENA eta 0.5", eta_init=0.5),
        Recipe("LENA eta 1", eta_init=1.0),
        Recipe("LENA eta 1, random head", eta_init=1.0, head_init="random"),
        Recipe("LENA eta 1 + mirror TTA", eta_init=1.0, tta=True),
        Recipe("LENA eta 1, 5-fold ensemble", eta_init=1.0, members=5),
        Recipe("LENA eta {1, 0}, ridge heads", etas=(1.0, 0.0), epochs=0),
        Recipe(
            "LENA eta {1, 0}, ridge heads per platform, gated",
            etas=(1.0, 0.0),
            epochs=0,
            per_platform=True,
        ),
        Recipe("ridge probe, 448 px", pooling="ridge", input_size=448),
        Recipe("ViralNet-M, initial crops, ridge ranker", pooling="ridge", viralnet="viralnet-m"),
        Recipe(
            "ViralNet-MC (ImageNet classes), initial crops, ridge ranker",
            pooling="ridge",
            viralnet="viralnet-mc",
        ),
        Recipe(
            "ViralNet-MC (DANKMEMES category probe), initial crops, ridge ranker",
            pooling="ridge",
            viralnet="viralnet-m",
            categories="probe",
        ),
        Recipe("LENA eta {1, 0}, ridge heads, 448 px", etas=(1.0, 0.0), epochs=0, input_size=448),
        Recipe(
            "LENA eta {1, 0}, ridge heads, 224 + 448 px (mean)",
            etas=(1.0, 0.0),
            epochs=0,
            sizes=(224, 448),
        ),
        Recipe(
            "LENA eta {1, 0}, ridge heads per platform, gated, 448 px",
            etas=(1.0, 0.0),
            epochs=0,
            per_platform=True,
            input_size=448,
        ),
        *(
            Recipe(
                f"LENA eta {{1, 0}}, ridge heads per platform, gate penalty {l2:g}",
                etas=(1.0, 0.0),
                epochs=0,
                per_platform=True,
                gate_l2=l2,
            )
            for l2 in (0.01, 0.001)
        ),
        Recipe("LENA eta {1, 0}", etas=(1.0, 0.0)),
        Recipe(
            "LENA eta 1 + objectness (20 classes), 2 epochs", eta_init=1.0, objectness=20, epochs=2
        ),
    )
}


# The recipes also fitted across and on both datasets (a row each way costs a full k-fold run).
SHIP_CANDIDATES = (
    "ridge probe",
    "LENA eta 1",
    "LENA eta {1, 0}, ridge heads",
    "LENA eta {1, 0}, ridge heads per platform, gated",
)

READERS = {"dankmemes": read_dankmemes, "reddit": read_reddit}


@dataclass
class Dataset:
    name: str
    root: Path
    paths: list[Path]
    scores: np.ndarray  # (N,) engagement
    views: Tensor  # (V, N, C, K) fp16 top-n mean tables of the trunk's output
    folds: Folds
    maps: Tensor | None = None  # (V, N, C, h, w) fp16 trunk output (the objectness recipe)
    size: int = 224  # the input side of `views` and `maps`
    # (1, N, C, K) tables of the plain view at other input sides (`Recipe.input_size`)
    sized: dict[int, Tensor] = field(default_factory=dict)
    # (1, N, D, 1) ViralNet ranker inputs by arch (`Recipe.viralnet`); "ARCH+probe" with the
    # category probe's outputs appended (`attach_category_probe`)
    viralnet: dict[str, Tensor] = field(default_factory=dict)
    categories: np.ndarray | None = None  # (N, K) 0/1 category labels (DANKMEMES only)

    def inputs(self, recipe: Recipe) -> Tensor:
        """What `recipe` is fitted on and scores: the maps for objectness, else the tables (at
        the recipe's input size; a ViralNet recipe's: its ranker inputs)."""
        if recipe.viralnet:
            key = "+".join(filter(None, (recipe.viralnet, recipe.categories)))
            if key not in self.viralnet:
                raise ValueError(f"{recipe.name!r} needs {key} ranker inputs")
            return self.viralnet[key]
        if recipe.input_size != self.size:
            if recipe.input_size not in self.sized:
                raise ValueError(
                    f"{recipe.name!r} needs the trunk's output at {recipe.input_size} px; "
                    f"{self.name} was loaded at {[self.size, *self.sized]} px"
                )
            return self.sized[recipe.input_size]
        if not recipe.objectness:
            return self.views
        if self.maps is None:
            raise ValueError(f"{recipe.name!r} needs the trunk's maps; {self.name} has tables only")
        return self.maps


def load_dataset(
    spec: str,
    k: int,
    seed: int,
    cache_dir: Path,
    sizes: Collection[int] = (),
    viralnets: Collection[str] = (),
) -> Dataset:
    """`FORMAT=PATH` (dankmemes or reddit): images, scores, cached trunk outputs and folds;
    `sizes`: other input sides to cache the plain view at (4x the time per doubling);
    `viralnets`: ViralNet archs whose ranker inputs to cache."""
    data_format, _, path = spec.partition("=")
    # Existence is checked here; a file that does not decode stops the caching, naming it.
    images = READERS[data_format](Path(path), check_images=False, on_bad_image="skip")
    model = FromBlock(ViralityNet(NetworkConfig(pooling="gap")), FROZEN)
    paths = [image.path for image in images]
    maps = cached_inputs(model, paths, VIEWS, 0, torch.device("cpu"), cache_dir)
    size = model.net.preprocessing.input_size
    sized = {}
    for other in sorted(set(sizes) - {size}):
        model.net.preprocessing = replace(model.net.preprocessing, input_size=other)
        plain = cached_inputs(model, paths, 1, 0, torch.device("cpu"), cache_dir)
        sized[other] = top_mean_table(plain)
    root = split_root(Path(path), data_format)
    folds = make_folds(images, k, seed)
    scores = scores_array(images)
    viralnet = {arch: cached_ranker_inputs(arch, paths, cache_dir) for arch in sorted(viralnets)}
    tables = top_mean_table(maps)
    categories = (
        read_dankmemes_categories(Path(path), paths) if data_format == "dankmemes" else None
    )
    return Dataset(
        data_format, root, paths, scores, tables, folds, maps, size, sized, viralnet, categories
    )


def attach_category_probe(sets: list[Dataset], arch: str) -> None:
    """Each set's `arch` ranker inputs plus g(I), ViralNet-C's category features, as
    viralnet["ARCH+probe"]: cross-fitted over its own folds where it has category labels,
    else from the probe fitted on all of a labelled set's images (training/categories.py)."""
    labelled = [d for d in sets if d.categories is not None]
    if not labelled:
        raise ValueError("the category probe needs a dataset with category labels (DANKMEMES)")
    source = labelled[0]
    assert source.categories is not None
    probe = fit_probe(whole_image_features(source.viralnet[arch], arch), source.categories)
    for d in sets:
        phi = whole_image_features(d.viralnet[arch], arch)
        if d.categories is not None:
            g = cross_fitted(phi, d.categories, d.folds)
        else:
            g = probe_outputs(probe, phi)
        extra = torch.from_numpy(g).to(d.viralnet[arch].dtype)[None, :, :, None]
        d.viralnet[f"{arch}+probe"] = torch.cat([d.viralnet[arch], extra], dim=2)


def fold_metrics(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(acc on pairs >= 2x apart, acc on top-k vs bottom-k pairs, k = n // 5)."""
    return (
        pair_accuracy(predicted, ratio_pairs(truth, 2.0)),
        pair_accuracy(predicted, extreme_pairs(truth, max(1, len(truth) // 5))),
    )


def summarise(per_fold: list[tuple[float, float]]) -> dict[str, Any]:
    acc = [a for a, _ in per_fold]
    extreme = [x for _, x in per_fold]
    mean, sd, half = mean_and_interval(acc)
    mean_x, sd_x, half_x = mean_and_interval(extreme)
    return {
        "folds": acc,
        "mean": mean,
        "sd": sd,
        "ci95": [mean - half, mean + half],
        "extreme_folds": extreme,
        "extreme_mean": mean_x,
        "extreme_sd": sd_x,
        "extreme_ci95": [mean_x - half_x, mean_x + half_x],
    }


def out_of_fold(recipe: Recipe, sets: list[Dataset], seed: int) -> dict[str, np.ndarray]:
    """Every image's score by the model of the fold that held it out, per dataset.

    Fold i's model is fitted on every dataset's other folds together (one dataset: within
    domain; several: engagement standardised per dataset, training/joint.py).
    """
    if recipe.sizes:
        each = [out_of_fold(at_size(recipe, size), sets, seed) for size in recipe.sizes]
        return {d.name: np.mean([e[d.name] for e in each], axis=0) for d in sets}
    scores = {d.name: np.zeros(len(d.scores)) for d in sets}
    for i in range(sets[0].folds.k):
        scorer, _ = fit_sets(recipe, sets, [d.folds.train(i) for d in sets], seed)
        for d in sets:
            test = d.folds.test(i)
            scores[d.name][test] = score_views(scorer, d.inputs(recipe)[:, test], recipe.tta)
    return scores


def fit_sets(
    recipe: Recipe, sets: list[Dataset], train: list[np.ndarray], seed: int
) -> tuple[Scorer, list[ViralityNet]]:
    """The recipe fitted on the images `train[j]` of each dataset `sets[j]`: one fit on them
    all (engagement standardised per dataset), or one per dataset (`Recipe.per_platform`)."""
    if recipe.per_platform and len(sets) > 1:
        data = [
            PlatformData(platform_name(d.name), d.inputs(recipe)[:, t], d.scores[t])
            for d, t in zip(sets, train, strict=True)
        ]
        scorer, net = fit_platforms(recipe, data, seed)
        return scorer, [net]
    views = torch.cat([d.inputs(recipe)[:, t] for d, t in zip(sets, train, strict=True)], dim=1)
    targets = (
        joint_scores([d.scores[t] for d, t in zip(sets, train, strict=True)])
        if len(sets) > 1
        else sets[0].scores[train[0]]
    )
    return fit_recipe(recipe, views, targets, seed)


def platform_name(dataset: str) -> str:
    """How callers name a dataset's platform (`?platform=`): instagram for DANKMEMES."""
    return DESCRIPTIONS.get(dataset, {}).get("platform", dataset)


def fold_summary(predicted: np.ndarray, data: Dataset) -> dict[str, Any]:
    """Per-fold accuracies of out-of-fold scores, their mean, spread and 95% interval."""
    folds = [data.folds.test(i) for i in range(data.folds.k)]
    return summarise([fold_metrics(predicted[t], data.scores[t]) for t in folds])


def across(recipe: Recipe, source: Dataset, target: Dataset, seed: int) -> dict[str, Any]:
    """Fit on all of `source`, score all of `target`, summarised over the target's folds.

    (A bootstrap over all of the target's pairs would hold resamples x ~10^6 pair weights.)
    """
    if recipe.sizes:
        each = [
            _across_scores(at_size(recipe, size), source, target, seed) for size in recipe.sizes
        ]
        return fold_summary(np.mean(each, axis=0), target)
    return fold_summary(_across_scores(recipe, source, target, seed), target)


def _across_scores(recipe: Recipe, source: Dataset, target: Dataset, seed: int) -> np.ndarray:
    scorer, _ = fit_recipe(recipe, source.inputs(recipe), source.scores, seed)
    return score_views(scorer, target.inputs(recipe), recipe.tta)


def at_size(recipe: Recipe, size: int) -> Recipe:
    """One input size of a multi-scale recipe."""
    return replace(recipe, sizes=(), input_size=size)


def _cell(result: dict[str, Any], key: str = "") -> str:
    mean, sd, (lo, hi) = (result[f"{key}mean"], result[f"{key}sd"], result[f"{key}ci95"])
    return f"{100 * mean:.1f} ± {100 * sd:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def table(results: dict[str, Any], names: list[str]) -> str:
    """The markdown table of the model card: one row per recipe."""
    columns = [f"{n} >= 2x" for n in names] + [f"{n} top/bottom" for n in names]
    joint = any("joint" in r for r in results.values())  # only some recipes are fitted jointly
    if joint:
        columns += [f"both -> {n} >= 2x" for n in names]
    lines = ["| recipe | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for recipe, r in results.items():
        cells = [_cell(r["within"][n]) for n in names]
        cells += [_cell(r["within"][n], "extreme_") for n in names]
        if joint:
            cells += [_cell(r["joint"][n]) if "joint" in r else "-" for n in names]
        lines.append(f"| {recipe} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cross_table(results: dict[str, Any]) -> str:
    lines = ["| recipe | trained on -> scored on | pairs >= 2x | top/bottom |", "|---|---|---|---|"]
    for recipe, r in results.items():
        for direction, m in r.get("across", {}).items():
            lines.append(f"| {recipe} | {direction} | {_cell(m)} | {_cell(m, 'extreme_')} |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict[str, Any]:
    chosen = args.recipes or list(RECIPES)
    needed = [RECIPES[name] for name in {*chosen, *args.joint, *args.cross}]
    sizes = {s for r in needed for s in (r.input_size, *r.sizes)}
    archs = {r.viralnet for r in needed if r.viralnet}
    sets = [
        load_dataset(spec, args.folds, args.seed, args.cache, sizes, archs) for spec in args.data
    ]
    for arch in sorted({r.viralnet for r in needed if r.categories == "probe"}):
        attach_category_probe(sets, arch)
    names = [d.name for d in sets]
    results: dict[str, Any] = {}
    for name in chosen:
        recipe, started = RECIPES[name], time.monotonic()
        r: dict[str, Any] = {"recipe": asdict(recipe)}
        r["within"] = {
            d.name: fold_summary(out_of_fold(recipe, [d], args.seed)[d.name], d) for d in sets
        }
        if len(sets) > 1 and name in args.joint:
            both = out_of_fold(recipe, sets, args.seed)
            r["joint"] = {d.name: fold_summary(both[d.name], d) for d in sets}
        if len(sets) > 1 and name in args.cross:
            r["across"] = {
                f"{a.name} -> {b.name}": across(recipe, a, b, args.seed)
                for a in sets
                for b in sets
                if a is not b
            }
        r["seconds"] = time.monotonic() - started
        results[name] = r
        log.info("%s: %s (%.0f s)", name, {n: r["within"][n]["mean"] for n in names}, r["seconds"])
    return {
        "folds": {d.name: d.folds.to_json(d.root) for d in sets},
        "seed": args.seed,
        "results": results,
    }


def merge(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One report from runs over the same folds and seed (e.g. recipes split between processes,
    a recipe added later, or `training.viralnet_cv`'s one-dataset reports); a dataset's folds
    must be the same in every report that has it. A recipe in several keeps the last run's
    result, except that results on different datasets join ("within" of one dataset's run
    beside another's). Rows follow RECIPES' order."""
    folds: dict[str, Any] = {}
    for report in reports:
        if report["seed"] != reports[0]["seed"]:
            raise ValueError("reports of different folds or seeds cannot be merged")
        for dataset, record in report["folds"].items():
            if folds.setdefault(dataset, record) != record:
                raise ValueError("reports of different folds or seeds cannot be merged")
    results: dict[str, dict[str, Any]] = {}
    for report in reports:
        for name, result in report["results"].items():
            within = {**results.get(name, {}).get("within", {}), **result.get("within", {})}
            results[name] = {**result, "within": within} if within else result
    order = [n for n in RECIPES if n in results] + [n for n in results if n not in RECIPES]
    return {
        "folds": folds,
        "seed": reports[0]["seed"],
        "results": {n: results[n] for n in order},
    }


def main(argv: list[str] | None = None) -> None:
    """Cross-validate the recipes on frozen MobileNetV2 features and print the table."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--data", action="append", default=[], help="FORMAT=PATH")
    parser.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        default=None,
        help="instead of fitting: merge these crossval.json reports (same folds) into --out",
    )
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--recipes", nargs="*", choices=list(RECIPES), default=None)
    parser.add_argument(
        "--cross",
        nargs="*",
        default=list(SHIP_CANDIDATES),
        help="recipes to fit on one dataset and score on the other",
    )
    parser.add_argument(
        "--joint",
        nargs="*",
        default=list(SHIP_CANDIDATES),
        help="recipes to also fit on both datasets together",
    )
    parser.add_argument("--cache", type=Path, default=Path("cache"))
    parser.add_argument("--out", type=Path, default=None, help="write crossval.json here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    if args.merge:
        report = merge([json.loads(path.read_text()) for path in args.merge])
    elif args.data:
        report = run(args)
    else:
        parser.error("give --data FORMAT=PATH (one or more), or --merge REPORT...")
    names = list(report["folds"])
    print(table(report["results"], names))
    print()
    print(cross_table(report["results"]))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "crossval.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
