"""Per-platform heads on synthetic maps: two platforms whose engagement follows the features in
opposite directions, which one pooled fit cannot serve and per-platform heads can."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from model.checkpoint import load_checkpoint
from training.crossval import Dataset, fit_sets, fold_summary, out_of_fold
from training.data import ScoredImage
from training.folds import make_folds
from training.recipes import Recipe, fit_recipe
from training.ship import ship_sets
from training.tables import top_mean_table

C, H, N = 32, 3, 120  # the tiny backbone's 32 channels, 3 x 3 maps
POOLS = Recipe("gap+gmp", etas=(1.0, 0.0), epochs=0, backbone="tiny")
PER_PLATFORM = Recipe(
    "gap+gmp per platform", etas=(1.0, 0.0), epochs=0, backbone="tiny", per_platform=True
)


def platform(name: str, sign: float, shift: float, seed: int) -> tuple[Dataset, torch.Tensor]:
    """N images' maps (2 views) and engagement = exp(sign * 3 GAP . d): one direction d for
    both platforms, opposite signs; `shift` moves the first 8 channels, so the gate can tell."""
    rng = np.random.default_rng(seed)
    maps = torch.from_numpy(rng.normal(size=(2, N, C, H, H))).float()
    maps[:, :, :8] += shift
    gap = maps[0].mean(dim=(2, 3)).double().numpy()
    direction = np.random.default_rng(99).normal(size=C)
    direction[:8] = 0  # the platform cue itself says nothing about engagement
    scores = np.round(np.exp(4 + sign * 3 * gap @ direction))
    paths = [Path(f"/{name}/{i:03d}.jpg") for i in range(N)]
    folds = make_folds([ScoredImage(p, float(s)) for p, s in zip(paths, scores, strict=True)], 4)
    table = top_mean_table(maps)
    return Dataset(name, Path(f"/{name}"), paths, scores, table, folds), maps


def two_platforms() -> tuple[list[Dataset], list[torch.Tensor]]:
    (a, maps_a), (b, maps_b) = platform("a", 1.0, 0.0, 0), platform("b", -1.0, 2.0, 1)
    return [a, b], [maps_a, maps_b]


def test_per_platform_heads_serve_platforms_that_one_pooled_fit_cannot() -> None:
    torch.set_num_threads(1)
    sets, _ = two_platforms()
    pooled = out_of_fold(POOLS, sets, 0)
    gated = out_of_fold(PER_PLATFORM, sets, 0)
    for d in sets:
        assert abs(fold_summary(pooled[d.name], d)["mean"] - 0.5) < 0.15
        assert fold_summary(gated[d.name], d)["mean"] > 0.8


def test_the_network_scores_the_maps_as_the_fit_scores_their_tables() -> None:
    torch.set_num_threads(1)
    sets, maps = two_platforms()
    everything = [np.arange(N), np.arange(N)]
    scorer, (net,) = fit_sets(PER_PLATFORM, sets, everything, 0)
    assert net.config.platforms == ["a", "b"]
    for d, m in zip(sets, maps, strict=True):
        with torch.no_grad():  # the stacked net sees its members' copies of the features
            shipped = net.score_features(m[0].repeat(1, net.config.members, 1, 1)).numpy()
        # (the tables are stored in fp16)
        np.testing.assert_allclose(shipped, scorer(d.views[0]), rtol=0, atol=2e-3)


def test_ships_each_platform_head_with_its_own_calibration(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    sets, maps = two_platforms()
    net, info = load_checkpoint(ship_sets(sets, PER_PLATFORM, tmp_path / "w", seed=0))
    assert info.platforms == ["a", "b"]
    assert set(info.platform_calibration) == {"a", "b"}
    given = info.metrics["crossval_platform_given"]
    assert given["a"]["mean"] > 0.8
    assert given["b"]["mean"] > 0.8
    # Platform a's head: the recipe fitted on a's images alone, standardised on them.
    scorer, _ = fit_recipe(PER_PLATFORM, sets[0].views, sets[0].scores, 0)
    own = scorer(sets[0].views[0])
    with torch.no_grad():
        f = maps[0][0].repeat(1, net.config.members, 1, 1)
        head_a = net.head(net.pool(f))[:, 0].numpy()
    np.testing.assert_allclose(head_a, (own - own.mean()) / own.std(), rtol=1e-3, atol=1e-3)
