"""Recipes on frozen features: the ridge probe and pooling + head fits, each a `Scorer`.

Every recipe sees the trunk's output f (the whole MobileNetV2 `features`, frozen at ImageNet
weights, cached once per image and view: `training.cache`) as a table of top-n means
(`training.tables`), so a recipe is cheap enough to fit k times (k-fold cross-validation) and
again for every member of a fold ensemble.

    ridge:  s(I) = w . GAP(f(I)) + b, ridge on log(1 + engagement)    (training/ridge.py)
    head:   s(I) = w . pool_eta(f(I)) + b, eq. (1) on pairs >= 2x apart (training/train.fit);
            only eta (LENA) and the head learn; the head may start from the ridge fit.
    TTA:    s(I) = mean over the plain and mirrored views.
    fold ensemble: m members, member j trained on all but the j-th inner fold and stopped
            early on it; s(I) = (1/m) sum_j s_j(I)                     (model/ensemble.py)
    pooling ensemble (`etas`): one member per eta (1 = GAP, 0 = GMP), each on all images;
            s(I) = (1/m) sum_j s_j(I) again, so it ships as one network.
    epochs = 0: the head is the ridge fit on the pooled features, nothing else is trained.
    objectness (section 3.4): the class maps of the k ImageNet classes most activated on the
            training images, fused into f by a learned 1x1 conv (identity at start) before
            LENA. The fusion changes f, so this recipe trains on the cached maps themselves
            (`Dataset.maps`), not on top-n mean tables.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from model.network import NetworkConfig, ViralityNet
from training.build import init_head_from_ridge as init_head_on_maps
from training.build import objectness_classes
from training.cache import FromBlock
from training.folds import assign_folds
from training.ridge import fit_ridge
from training.tables import TableHead, pool_table
from training.train import TrainConfig, fit, predict

FROZEN = 19  # every block of MobileNetV2 `features` frozen: the cache holds the trunk's output

Scorer = Callable[[Tensor], np.ndarray]  # (N, C, K) top-n mean tables of one view -> (N,)


@dataclass(frozen=True)
class Recipe:
    """One way to turn frozen features into a score; `name` labels its row in the table."""

    name: str
    pooling: str = "lena"  # ridge | gap | gmp | gnap | lena
    eta_init: float = 0.5
    head_init: str = "ridge"  # ridge | random
    epochs: int = 6
    head_lr: float = 1e-3
    eta_lr: float = 1e-2
    weight_decay: float = 1e-2
    early_stop: bool = True  # best epoch on an inner 15% (else: the last epoch, all images)
    members: int = 1  # > 1: a fold ensemble of this many members
    backbone: str = "mobilenet_v2"  # whose frozen output the tables hold
    tta: bool = False  # average the plain and mirrored views (the service scores the plain one)
    etas: tuple[float, ...] = ()  # a pooling ensemble: one member per eta (overrides eta_init)
    objectness: int = 0  # > 0: fuse this many ImageNet class maps (fitted on the maps)
    # On several datasets: fit each alone, mixed by a platform gate (training/platforms.py),
    # instead of one fit on them all; gate_l2 is the gate's penalty.
    per_platform: bool = False
    gate_l2: float = 0.1
    input_size: int = 224  # the side the image is squashed to (the trunk's maps: size / 32)
    # Multi-scale (cross-validation only): the recipe fitted at each of these input sizes, its
    # scores averaged. The service runs one input size, so such a recipe cannot ship.
    sizes: tuple[int, ...] = ()
    # A ViralNet arch (e.g. "viralnet-m"): fitted on its ranker's inputs at the initial crops
    # (training/viralnet_table.py), with the ridge probe; cross-validation only.
    viralnet: str = ""
    # With `viralnet`: "probe" appends ViralNet-C's category features g(I), the DANKMEMES
    # category probe's outputs (training/categories.py), to the ranker's inputs.
    categories: str = ""


def _train_config(recipe: Recipe, seed: int) -> TrainConfig:
    return TrainConfig(
        pooling=recipe.pooling,
        eta_init=recipe.eta_init,
        freeze_blocks=FROZEN,
        epochs=recipe.epochs,
        head_lr=recipe.head_lr,
        eta_lr=recipe.eta_lr,
        weight_decay=recipe.weight_decay,
        seed=seed,
        device="cpu",
        amp=False,
    )


def build_network(recipe: Recipe, seed: int) -> ViralityNet:
    """A fresh network: the ImageNet trunk (frozen) and a new pool and head."""
    torch.manual_seed(seed)
    config = NetworkConfig(recipe.backbone, recipe.pooling, recipe.eta_init)
    net = ViralityNet(config, pretrained=True)
    net.preprocessing = replace(net.preprocessing, input_size=recipe.input_size)
    return net


@torch.no_grad()
def init_head_from_ridge(net: ViralityNet, table: Tensor, scores: np.ndarray) -> None:
    """Start the head at the ridge fit of log(1 + scores) on the pooled features (N, C, K)."""
    probe = fit_ridge(pool_table(net, table).double().numpy(), scores)
    net.head.weight.copy_(torch.from_numpy(probe.weight).to(net.head.weight)[None])
    net.head.bias.fill_(probe.bias)


def fit_member(
    recipe: Recipe,
    tables: Tensor,
    scores: np.ndarray,
    stop_on: np.ndarray | None,
    seed: int,
) -> ViralityNet:
    """Fit one pool + head on (V, N, C, K) tables; `stop_on` indexes the images held out for
    early stopping (None: train on all N and keep the last epoch)."""
    net = build_network(recipe, seed)
    model = TableHead(net)
    keep = np.ones(len(scores), dtype=bool)
    if stop_on is not None:
        keep[stop_on] = False
    train_tables, train_scores = tables[:, torch.from_numpy(keep)], scores[keep]
    if recipe.head_init == "ridge":
        init_head_from_ridge(net, train_tables[0], train_scores)
    if recipe.epochs == 0:
        return net.eval()
    cfg = _train_config(recipe, seed)
    held = np.flatnonzero(~keep) if stop_on is not None else np.arange(min(64, len(scores)))
    result = fit(model, train_tables, train_scores, tables[0, held], scores[held], cfg)
    if stop_on is not None:
        model.load_state_dict(result.model_state)
    return net.eval()


def score_views(scorer: Scorer, views: Tensor, tta: bool) -> np.ndarray:
    """Scores of the plain view, or the mean over plain and mirror (TTA). (V, N, ...) -> (N,)"""
    used = views[:2] if tta and len(views) > 1 else views[:1]
    return np.mean([scorer(v) for v in used], axis=0)


def _head_scorer(net: ViralityNet) -> Scorer:
    return lambda x: predict(TableHead(net), x, torch.device("cpu"))


def _ridge_scorer(tables: Tensor, scores: np.ndarray) -> Scorer:
    """The linear probe: ridge on the GAP features, A(K) in the table."""
    probe = fit_ridge(tables[0, ..., -1].double().numpy(), scores)
    return lambda x: probe(x[..., -1].double().numpy())


def early_stop_images(n: int, seed: int) -> np.ndarray:
    """The inner 15% (at least 2) of n training images that a recipe stops early on."""
    return np.random.default_rng(seed).permutation(n)[: max(2, round(0.15 * n))]


def fit_on_maps(
    recipe: Recipe, maps: Tensor, scores: np.ndarray, seed: int
) -> tuple[Scorer, ViralityNet]:
    """The objectness recipe on (V, N, C, h, w) cached trunk maps: classes picked on these
    images, head from the ridge fit, then fusion, eta and head on pairs, stopped early."""
    cpu = torch.device("cpu")
    cfg = _train_config(recipe, seed)
    # The maps are the whole trunk's output, so picking the classes needs only the config (and
    # the pretrained classifier, which objectness_classes loads): no second pretrained trunk.
    plain = NetworkConfig(recipe.backbone, recipe.pooling, recipe.eta_init)
    chooser = FromBlock(ViralityNet(plain, pretrained=False), FROZEN)
    classes = objectness_classes(chooser, maps, recipe.objectness, cpu)
    torch.manual_seed(seed)
    config = replace(plain, objectness_classes=classes)
    model = FromBlock(ViralityNet(config, pretrained=True), FROZEN)
    n = len(scores)
    held = early_stop_images(n, seed)
    keep = np.ones(n, dtype=bool)
    keep[held] = False
    kept = torch.from_numpy(keep)
    init_head_on_maps(model, maps[0, kept], scores[keep], cfg.ratio, cpu)
    result = fit(model, maps[:, kept], scores[keep], maps[0, held], scores[held], cfg)
    model.load_state_dict(result.model_state)
    model.eval()
    return (lambda x: predict(model, x, cpu)), model.net


def fit_recipe(
    recipe: Recipe, views: Tensor, scores: np.ndarray, seed: int = 0
) -> tuple[Scorer, list[ViralityNet]]:
    """Fit a recipe on (V, N, C, K) training tables (the objectness recipe: (V, N, C, h, w)
    maps); returns its scorer and the member networks (empty for the ridge probe)."""
    if recipe.objectness:
        scorer, net = fit_on_maps(recipe, views, scores, seed)
        return scorer, [net]
    if recipe.pooling == "ridge":
        return _ridge_scorer(views, scores), []
    n = len(scores)
    stop_on = None
    if recipe.early_stop and recipe.epochs > 0:
        stop_on = early_stop_images(n, seed)
    if recipe.etas:
        members = [
            fit_member(replace(recipe, eta_init=eta), views, scores, stop_on, seed)
            for eta in recipe.etas
        ]
    elif recipe.members > 1:
        inner = assign_folds(n, recipe.members, seed)
        members = [
            fit_member(recipe, views, scores, np.flatnonzero(inner == j), seed + j)
            for j in range(recipe.members)
        ]
    else:
        members = [fit_member(recipe, views, scores, stop_on, seed)]
    scorers = [_head_scorer(m) for m in members]
    return (lambda x: np.mean([s(x) for s in scorers], axis=0)), members


def with_members(recipe: Recipe, members: int) -> Recipe:
    return replace(recipe, name=f"{recipe.name}, {members}-fold ensemble", members=members)
