"""ViralNet-C's category network on frozen features: one logistic probe per category label.

The paper trains its category model beforehand and keeps it fixed (section 3.2). On DANKMEMES
the categories are the data's own annotations (`DANKMEMES_CATEGORIES` in training/data.py:
meme, manipulation, people shown); a set without them (Reddit) gets the probe fitted on
DANKMEMES, as the paper applies one category model to every dataset.

    g(I) = sigmoid(W phi(I) + c)        phi(I) = GAP of the frozen trunk, (N, L) -> (N, K)

`cross_fitted` gives every image of a labelled set the probe of the folds that do not hold it,
so no image's g(I) comes from a probe fitted on its own labels; under the cross-validation the
test fold's labels never enter its own features (the training folds' features saw them:
category labels, never engagement).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from training.folds import Folds
from training.logistic import fit_logistic

PROBE_L2 = 0.1  # on standardised features; chosen by held-out category log-loss (model card)


def fit_probe(features: np.ndarray, labels: np.ndarray, l2: float = PROBE_L2) -> nn.Linear:
    """Independent logistic regressions of the (N, K) 0/1 `labels` on (N, L) features."""
    target = torch.from_numpy(labels.astype(np.float64))
    bce = nn.functional.binary_cross_entropy_with_logits
    return fit_logistic(features, target, labels.shape[1], bce, l2)


def probe_outputs(probe: nn.Linear, features: np.ndarray) -> np.ndarray:
    """g(I) = sigmoid(W phi(I) + c) for (N, L) features -> (N, K)."""
    with torch.no_grad():
        return torch.sigmoid(probe(torch.from_numpy(features).to(probe.weight))).numpy()


def cross_fitted(
    features: np.ndarray, labels: np.ndarray, folds: Folds, l2: float = PROBE_L2
) -> np.ndarray:
    """Every image's g(I) from the probe fitted on the other folds. -> (N, K)"""
    out = np.zeros(labels.shape, dtype=np.float64)
    for i in range(folds.k):
        probe = fit_probe(features[folds.train(i)], labels[folds.train(i)], l2)
        out[folds.test(i)] = probe_outputs(probe, features[folds.test(i)])
    return out
