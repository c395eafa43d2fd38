"""training.ship: the chosen recipe fitted on every image, calibrated out of fold, loadable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model.checkpoint import Calibration, load_checkpoint
from tests.training.test_crossval import dataset
from training.crossval import out_of_fold
from training.joint import joint_scores
from training.recipes import Recipe, fit_recipe
from training.ship import ship_sets
from training.tables import pool_table

POOLS = Recipe("gap+gmp", etas=(1.0, 0.0), epochs=0, backbone="tiny")


def test_ships_one_network_that_scores_as_the_recipe_fitted_on_every_image(
    tmp_path: Path,
) -> None:
    torch.set_num_threads(1)
    sets = [dataset("a", True), dataset("b", True, seed=2)]
    out = ship_sets(sets, POOLS, tmp_path / "weights", seed=0)
    net, info = load_checkpoint(out)
    assert net.config.members == 2  # the two pooling members, stacked into one forward
    # The weights: the recipe refitted on all images of both sets (not one fold's model).
    views = torch.cat([d.views for d in sets], dim=1)
    scorer, _ = fit_recipe(POOLS, views, joint_scores([d.scores for d in sets]), 0)
    table = sets[0].views[0]
    with torch.no_grad():
        copies = table.float().repeat(1, 2, 1)  # the stacked net's M copies of the features
        shipped = net.head(pool_table(net, copies)).squeeze(-1).numpy()
    np.testing.assert_allclose(shipped, scorer(table), rtol=1e-4, atol=1e-4)
    # The percentile table: every image scored by a model that never saw it.
    oof = out_of_fold(POOLS, sets, 0)
    expected = Calibration.from_scores(np.concatenate([oof["a"], oof["b"]]))
    assert info.calibration is not None
    np.testing.assert_allclose(info.calibration.quantiles, expected.quantiles, rtol=1e-6)
    # What it was trained on and how well it cross-validated travel with it.
    assert set(info.metrics["crossval"]) == {"a", "b"}
    assert info.metrics["crossval"]["a"]["mean"] > 0.7
    assert info.training["recipe"]["etas"] == [1.0, 0.0]
    assert info.training["datasets"]["a"]["images"] == len(sets[0].scores)
    assert len(info.training["datasets"]["b"]["folds"]["folds"]) == sets[1].folds.k
    # One line each for /model and the web page, naming both sets' licences.
    assert info.training["data"] == "a + b"
    assert "a: unknown" in info.training["licence"]
    assert "b: unknown" in info.training["licence"]


@pytest.mark.parametrize(
    "recipe",
    [
        Recipe("ridge", pooling="ridge"),
        Recipe("tta", tta=True, backbone="tiny"),
        Recipe("two sizes", sizes=(224, 448), backbone="tiny"),
        Recipe("viralnet table", pooling="ridge", viralnet="viralnet-m"),
    ],
)
def test_refuses_what_the_service_cannot_run(recipe: Recipe, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot be shipped"):
        ship_sets([dataset("a", True)], recipe, tmp_path, seed=0)
    assert not any(tmp_path.iterdir())
