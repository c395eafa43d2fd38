"""ViralNet's ranker inputs as a table: exactly what its ranker weighs, fitted like the probe."""

from __future__ import annotations

import numpy as np
import torch

from model.images import normalise
from model.viralnet import ViralNet, config_for_arch
from tests.training.test_crossval import dataset
from training.crossval import fold_summary, out_of_fold
from training.recipes import Recipe
from training.viralnet_table import ranker_inputs


def test_the_ranker_scores_its_inputs_as_the_network_scores_the_image() -> None:
    torch.manual_seed(0)
    net = ViralNet(config_for_arch("viralnet-m", "tiny", crop_size=32), pretrained=False).eval()
    with torch.no_grad():
        for loc in net.localisers:  # crops that differ per image, not only the centred start
            loc.out.weight.normal_(0.0, 0.05)
    size = net.preprocessing.input_size
    pixels = torch.randint(0, 256, (5, size, size, 3), dtype=torch.uint8)
    x = ranker_inputs(net, pixels, batch=2)
    assert x.shape == (5, net.ranker.in_features)
    with torch.no_grad():
        direct = net(normalise(pixels, net.preprocessing))
        torch.testing.assert_close(net.ranker(x).squeeze(-1), direct, rtol=1e-4, atol=1e-5)


def test_a_viralnet_recipe_is_fitted_on_its_ranker_inputs() -> None:
    torch.set_num_threads(1)
    data = dataset("a", signal=False, seed=1)  # other tables than the signal's
    with_signal = dataset("a", signal=True)
    data.scores = with_signal.scores
    data.viralnet["viralnet-m"] = with_signal.views[:1, :, :, -1:]  # (1, N, D, 1): x = GAP
    recipe = Recipe("vn", pooling="ridge", viralnet="viralnet-m")
    assert fold_summary(out_of_fold(recipe, [data], 0)["a"], data)["mean"] > 0.8
    assert np.isclose(
        fold_summary(out_of_fold(Recipe("probe", pooling="ridge"), [data], 0)["a"], data)["mean"],
        0.5,
        atol=0.1,
    )  # the same probe on the (noise) tables: it was the ranker inputs that carried the signal
