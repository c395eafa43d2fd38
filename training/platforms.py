"""Per-platform heads: a recipe fitted on each dataset alone, mixed by a gate that guesses the
platform, in one network (model/ensemble.stack_platforms).

Pooling both datasets into one fit costs DANKMEMES ~5 points of cross-validated accuracy
(weights/MODEL_CARD.md): what makes an Instagram meme viral is not what makes a Reddit one.
So each platform p gets its own fit s_p, standardised on its training images,

    z_p(I) = (s_p(I) - mean_p) / sd_p           mean_p, sd_p of s_p over p's training images

and a caller who knows the platform (`?platform=` in the service) gets z_p itself: exactly
the within-platform recipe. Otherwise a gate, multinomial logistic regression of the platform
on the trunk's GAP features (L2 penalty `gate_l2` on standardised features), weights them:

    s(I) = sum_p softmax(W_g . GAP(f(I)) + b_g)_p z_p(I)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from model.ensemble import stack_platforms
from model.network import ViralityNet
from training.logistic import fit_logistic
from training.recipes import Recipe, Scorer, fit_recipe, score_views


@dataclass(frozen=True)
class PlatformData:
    name: str  # the platform, as callers name it (e.g. "instagram")
    inputs: Tensor  # (V, N, C, K) top-n mean tables of its training images
    scores: np.ndarray  # (N,) engagement


def fit_gate(features: np.ndarray, platform: np.ndarray, platforms: int, l2: float) -> nn.Linear:
    """Multinomial logistic regression of `platform` (N,) ints on (N, C) features, the penalty
    l2 * |W|^2 on standardised features, folded back into a Linear on the raw features."""
    target = torch.from_numpy(platform).long()
    return fit_logistic(features, target, platforms, nn.functional.cross_entropy, l2)


def _gap(tables: Tensor) -> np.ndarray:
    return tables[..., -1].double().numpy()  # A(K): the mean over all positions


def fit_platforms(
    recipe: Recipe, data: Sequence[PlatformData], seed: int = 0
) -> tuple[Scorer, ViralityNet]:
    """The recipe on each platform's images and the gate on all of them (see above); returns
    the scorer of (N, C, K) tables and the network that scores the same on the maps."""
    groups, scorers, shift, scale = {}, [], [], []
    for d in data:
        scorer, members = fit_recipe(recipe, d.inputs, d.scores, seed)
        own = score_views(scorer, d.inputs, tta=False)
        groups[d.name] = members
        scorers.append(scorer)
        shift.append(float(own.mean()))
        scale.append(float(own.std()) + 1e-12)
    features = np.concatenate([_gap(d.inputs[0]) for d in data])
    platform = np.concatenate([np.full(len(d.scores), p) for p, d in enumerate(data)])
    gate = fit_gate(features, platform, len(data), recipe.gate_l2)

    def score(tables: Tensor) -> np.ndarray:
        with torch.no_grad():
            weights = torch.softmax(gate(torch.from_numpy(_gap(tables)).float()), 1).double()
        z = [(s(tables) - m) / sd for s, m, sd in zip(scorers, shift, scale, strict=True)]
        return np.sum(weights.numpy() * np.stack(z, axis=1), axis=1)

    return score, stack_platforms(groups, gate, shift, scale)
