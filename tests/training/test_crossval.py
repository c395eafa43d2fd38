"""Cross-validation driver on synthetic top-n mean tables: held-out scores, table, ensembles."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from model.ensemble import stack_members
from training.accuracy import pair_accuracy
from training.crossval import Dataset, fold_summary, merge, out_of_fold, table
from training.data import ScoredImage
from training.folds import make_folds
from training.pairs import ratio_pairs
from training.recipes import Recipe, fit_recipe
from training.ridge import fit_ridge
from training.tables import TableHead

C, K, N = 32, 9, 120  # the tiny backbone's 32 channels


def dataset(name: str, signal: bool, seed: int = 0) -> Dataset:
    """Tables of N images; with `signal`, log engagement is a linear function of GAP."""
    rng = np.random.default_rng(seed)
    maps = torch.from_numpy(rng.normal(size=(2, N, C, K))).float()
    table = torch.sort(maps, dim=-1, descending=True).values.cumsum(-1) / torch.arange(1, K + 1)
    gap = table[0, :, :, -1].double().numpy()
    direction = np.random.default_rng(99).normal(size=C)  # one signal shared by the datasets
    log_engagement = 3 * gap @ direction if signal else rng.normal(size=N)
    scores = np.round(np.exp(4 + log_engagement))
    paths = [Path(f"/{name}/{i:03d}.jpg") for i in range(N)]
    folds = make_folds([ScoredImage(p, float(s)) for p, s in zip(paths, scores, strict=True)], 4)
    return Dataset(name, Path(f"/{name}"), paths, scores, table.half(), folds)


FAST = {"epochs": 2, "backbone": "tiny"}


@pytest.mark.parametrize(
    "recipe", [Recipe("ridge", pooling="ridge"), Recipe("lena", eta_init=1.0, **FAST)]
)
def test_out_of_fold_scores_follow_the_signal_and_not_noise(recipe: Recipe) -> None:
    torch.set_num_threads(1)
    with_signal = dataset("a", signal=True)
    summary = fold_summary(out_of_fold(recipe, [with_signal], 0)["a"], with_signal)
    assert summary["mean"] > 0.8
    assert len(summary["folds"]) == 4
    assert summary["ci95"][0] <= summary["mean"] <= summary["ci95"][1]
    # Random engagement: held-out images cannot be ranked; a model that had seen them could.
    noise = dataset("b", signal=False, seed=1)
    assert abs(fold_summary(out_of_fold(recipe, [noise], 0)["b"], noise)["mean"] - 0.5) < 0.1


def test_joint_training_scores_each_dataset() -> None:
    sets = [dataset("a", True), dataset("b", True, seed=2)]
    scores = out_of_fold(Recipe("ridge", pooling="ridge"), sets, 0)
    assert {n: v.shape for n, v in scores.items()} == {"a": (N,), "b": (N,)}
    assert all(fold_summary(scores[d.name], d)["mean"] > 0.7 for d in sets)


def test_fold_ensemble_members_are_real_networks_and_average() -> None:
    data = dataset("a", True)
    scorer, members = fit_recipe(
        Recipe("e", eta_init=1.0, members=3, **FAST), data.views, data.scores
    )
    assert len(members) == 3
    with torch.no_grad():
        each = [TableHead(m)(data.views[0].float()).numpy() for m in members]
    np.testing.assert_allclose(scorer(data.views[0]), np.mean(each, axis=0), rtol=1e-5, atol=1e-6)


def test_table_has_one_row_per_recipe_and_a_column_per_dataset() -> None:
    data = dataset("a", True)
    summary = fold_summary(out_of_fold(Recipe("ridge", pooling="ridge"), [data], 0)["a"], data)
    text = table({"ridge": {"within": {"a": summary}}}, ["a"])
    lines = text.splitlines()
    assert lines[0].startswith("| recipe | a >= 2x | a top/bottom |")
    assert lines[2].startswith(f"| ridge | {100 * summary['mean']:.1f} ± ")


def test_pooling_ensemble_with_ridge_heads_scores_as_the_two_ridge_fits() -> None:
    """eta 1 (GAP) and eta 0 (GMP) members, epochs = 0: each head is the ridge fit of its
    pooling, computed here from the raw tables, and the recipe's score is their mean."""
    data = dataset("a", True)
    recipe = Recipe("gap+gmp", etas=(1.0, 0.0), epochs=0, backbone="tiny")
    scorer, members = fit_recipe(recipe, data.views, data.scores)
    table = data.views[0].double().numpy()
    gap_fit = fit_ridge(table[..., -1], data.scores)
    gmp_fit = fit_ridge(table[..., 0], data.scores)
    expected = (gap_fit(table[..., -1]) + gmp_fit(table[..., 0])) / 2
    np.testing.assert_allclose(scorer(data.views[0]), expected, rtol=1e-3, atol=1e-3)
    stacked = stack_members(members)  # what training.ship writes: one network, one forward
    assert stacked.config.members == 2
    images = torch.rand(5, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        each = torch.stack([m(images) for m in members])
        torch.testing.assert_close(stacked(images), each.mean(0), rtol=1e-5, atol=1e-5)


def test_table_rows_keep_their_width_when_only_some_recipes_ran_jointly() -> None:
    sets = [dataset("a", True), dataset("b", True, seed=2)]
    ridge = Recipe("ridge", pooling="ridge")
    within = {d.name: fold_summary(out_of_fold(ridge, [d], 0)[d.name], d) for d in sets}
    both = out_of_fold(ridge, sets, 0)
    joint = {d.name: fold_summary(both[d.name], d) for d in sets}
    text = table({"x": {"within": within, "joint": joint}, "y": {"within": within}}, ["a", "b"])
    widths = {line.count("|") for line in text.splitlines()}
    assert widths == {8}  # recipe + 2 x (>= 2x, top/bottom, both ->) columns
    assert text.splitlines()[-1].endswith("| - | - |")


def test_objectness_recipe_trains_the_fusion_on_the_maps() -> None:
    """Section 3.4 on cached MobileNetV2 maps: the classes are picked on the training images,
    the fusion (identity at start) is trained, and held-out scores follow the signal."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(4)
    n, c = 240, 1280
    z = rng.normal(size=n)  # how viral each image is, written along one direction v >= 0
    v = rng.uniform(0.0, 1.0, size=(c, 1, 1))
    noise = rng.gamma(1.0, 0.5, size=(1, n, c, 3, 3))
    maps = torch.from_numpy(noise + 0.5 * (z[:, None, None, None] + 2.0) * v).half()
    scores = np.round(np.exp(4 + 1.5 * z))
    recipe = Recipe("obj", eta_init=1.0, objectness=5, epochs=1)
    scorer, (net,) = fit_recipe(recipe, maps[:, :180], scores[:180])
    assert net.objectness is not None
    assert len(net.config.objectness_classes) == 5
    identity = torch.eye(c)
    fused = net.objectness.fuse.weight[:, :c, 0, 0].detach()
    assert not torch.equal(fused, identity)  # trained, not left at its start
    held_out = scorer(maps[0, 180:])
    pairs = ratio_pairs(scores[180:], 2.0)
    assert pair_accuracy(held_out, pairs) > 0.7


def test_merge_joins_runs_over_the_same_folds_in_recipe_order() -> None:
    folds = {"a": {"seed": 0, "folds": [["1.jpg"], ["2.jpg"]]}}
    late = {"folds": folds, "seed": 0, "results": {"GAP": {"x": 1}, "ridge probe": {"x": 2}}}
    early = {"folds": folds, "seed": 0, "results": {"ridge probe": {"x": 3}}}
    merged = merge([early, late])
    assert list(merged["results"]) == ["ridge probe", "GAP"]  # RECIPES' order
    assert merged["results"]["ridge probe"] == {"x": 2}  # the later run wins
    other = {"folds": {"a": {"seed": 1, "folds": []}}, "seed": 0, "results": {}}
    with pytest.raises(ValueError, match="different folds"):
        merge([early, other])


def test_merge_joins_one_dataset_reports_of_a_recipe() -> None:
    """training.viralnet_cv reports one dataset at a time: its runs on a and b become one row."""
    a = {"seed": 0, "folds": [["1.jpg"], ["2.jpg"]]}
    b = {"seed": 0, "folds": [["x.jpg"], ["y.jpg"]]}
    both = {"folds": {"a": a, "b": b}, "seed": 0, "results": {"GAP": {"within": {"a": 1, "b": 2}}}}
    on_a = {"folds": {"a": a}, "seed": 0, "results": {"ViralNet": {"within": {"a": 3}}}}
    on_b = {"folds": {"b": b}, "seed": 0, "results": {"ViralNet": {"within": {"b": 4}}}}
    merged = merge([both, on_a, on_b])
    assert merged["folds"] == {"a": a, "b": b}
    assert merged["results"]["ViralNet"]["within"] == {"a": 3, "b": 4}
    assert merged["results"]["GAP"] == {"within": {"a": 1, "b": 2}}
    moved = {"folds": {"b": {"seed": 0, "folds": [["y.jpg"], ["x.jpg"]]}}, "seed": 0}
    with pytest.raises(ValueError, match="different folds"):
        merge([both, {**moved, "results": {}}])


def test_a_recipe_at_another_input_size_fits_and_ships_at_that_size() -> None:
    torch.set_num_threads(1)
    data = dataset("a", signal=False)
    big = dataset("a", signal=True)  # stands in for the trunk's output at 448 px
    data.sized[448] = big.views[:1]
    data.scores = big.scores
    recipe = Recipe("pools, 448 px", etas=(1.0, 0.0), epochs=0, backbone="tiny", input_size=448)
    # Fitted on the 448 px tables (where the signal is), not the 224 px ones (noise).
    assert fold_summary(out_of_fold(recipe, [data], 0)["a"], data)["mean"] > 0.8
    _, members = fit_recipe(recipe, data.inputs(recipe), data.scores, 0)
    assert all(m.preprocessing.input_size == 448 for m in members)  # what the service feeds
    with pytest.raises(ValueError, match=r"at 320 px; a was loaded at \[224, 448\] px"):
        data.inputs(Recipe("x", input_size=320))


def test_a_multi_scale_recipe_averages_the_recipe_at_each_size() -> None:
    torch.set_num_threads(1)
    data = dataset("a", signal=True)
    data.sized[448] = dataset("a", signal=False, seed=3).views[:1]
    pools = Recipe("pools", etas=(1.0, 0.0), epochs=0, backbone="tiny")
    both = replace(pools, sizes=(224, 448))
    at_224 = out_of_fold(pools, [data], 0)["a"]
    at_448 = out_of_fold(replace(pools, input_size=448), [data], 0)["a"]
    np.testing.assert_allclose(out_of_fold(both, [data], 0)["a"], (at_224 + at_448) / 2)
