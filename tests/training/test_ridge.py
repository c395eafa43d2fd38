"""training.ridge: the ridge fit of log engagement, and the head it initialises."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from model.network import NetworkConfig, ViralityNet
from tests.training.tiny_runs import bright_squares, tiny_run, write_dataset
from training.accuracy import pair_accuracy
from training.build import init_head_from_ridge
from training.cache import FromBlock
from training.ridge import LAMBDAS, _path, fit_ridge


def linear_data(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features whose first three columns set log(1 + score); two more are noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)) * [1.0, 2.0, 0.5, 1.0, 1.0] + [3.0, -1.0, 0.0, 5.0, 2.0]
    truth = np.array([0.8, -0.4, 1.5, 0.0, 0.0])
    log_score = x @ truth - (x @ truth).min() + 0.05 * rng.normal(size=n)
    return x, np.expm1(log_score), truth


def test_recovers_a_linear_log_engagement() -> None:
    x, scores, truth = linear_data()
    fit = fit_ridge(x[:200], scores[:200])
    np.testing.assert_allclose(fit.weight, truth, atol=0.05)
    held_out = np.log1p(scores[200:])
    assert np.corrcoef(fit(x[200:]), held_out)[0, 1] > 0.99
    np.testing.assert_allclose(fit(x[200:]), held_out, atol=0.3)  # the intercept too


def test_the_fit_does_not_depend_on_the_features_units() -> None:
    x, scores, _ = linear_data(seed=1)
    fit = fit_ridge(x, scores)
    rescaled = fit_ridge(x * [10.0, 0.1, 3.0, 1.0, 7.0] - 4.0, scores)
    assert rescaled.penalty == fit.penalty
    np.testing.assert_allclose(
        rescaled(x * [10.0, 0.1, 3.0, 1.0, 7.0] - 4.0), fit(x), rtol=1e-6, atol=1e-6
    )


@torch.no_grad()
def test_head_init_makes_the_network_score_as_the_ridge_fit() -> None:
    images, scores = bright_squares(96, seed=5)
    torch.manual_seed(0)
    net = ViralityNet(NetworkConfig(backbone="tiny", pooling="lena"), pretrained=False)
    model = FromBlock(net, 0)
    init_head_from_ridge(model, images[:64], scores[:64], 2.0, torch.device("cpu"))
    pooled = net.pool(model.feature_maps(images)).double().numpy()
    expected = fit_ridge(pooled[:64], scores[:64])(pooled)
    got = model(images).double().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    held_out = np.array(
        [(a, b) for a in range(64, 96) for b in range(64, 96) if scores[a] > scores[b]]
    )
    assert pair_accuracy(got[64:], held_out - 64) > 0.7  # brightness is linear in the features


def test_head_init_needs_scores_not_pairs(tmp_path: Path) -> None:
    folder = write_dataset(tmp_path / "data").parent
    cfg = tiny_run(folder, tmp_path / "run", data=str(folder / "pairs.csv"), data_format="pairs")
    with pytest.raises(ValueError, match="per-image scores"):  # when the config is made
        replace(cfg, head_init="ridge")


@pytest.mark.parametrize("features", [12, 200])  # fewer, then more features than images
def test_every_penalty_solves_the_normal_equations(features: int) -> None:
    """Against numpy's own solve of (x'x + lambda I) beta = x'(y - mean y), in both forms."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, features)), rng.normal(size=40)
    for penalty, beta in zip(LAMBDAS[:4], _path(x, y, LAMBDAS[:4]), strict=True):
        direct = np.linalg.solve(x.T @ x + penalty * np.eye(features), x.T @ (y - y.mean()))
        np.testing.assert_allclose(beta, direct, rtol=1e-6, atol=1e-9)
