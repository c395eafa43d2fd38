"""Penalised logistic regression on frozen features, folded into one `nn.Linear`.

The platform gate (training/platforms.py, one softmax over platforms) and ViralNet-C's
category probe (training/categories.py, one sigmoid per category) are both fitted here:
L-BFGS on standardised features with the penalty l2 * |W|^2, then the standardisation folded
back so the Linear takes the raw features.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

Loss = Callable[[Tensor, Tensor], Tensor]  # (logits (N, K), target) -> mean loss


def fit_logistic(
    features: np.ndarray, target: Tensor, outputs: int, loss: Loss, l2: float
) -> nn.Linear:
    """A Linear (C -> outputs) minimising loss(logits, target) + l2 |W|^2 on the (N, C)
    features standardised, returned on the raw features."""
    mean, sd = features.mean(0), features.std(0) + 1e-6
    x = torch.from_numpy((features - mean) / sd)
    weight = torch.zeros(outputs, x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(outputs, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([weight, bias], max_iter=300, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimiser.zero_grad()
        value = loss(x @ weight.T + bias, target) + l2 * (weight**2).sum()
        value.backward()
        return value

    optimiser.step(closure)
    linear = nn.Linear(x.shape[1], outputs)
    with torch.no_grad():
        raw = weight / torch.from_numpy(sd)
        linear.weight.copy_(raw)
        linear.bias.copy_(bias - raw @ torch.from_numpy(mean))
    return linear
