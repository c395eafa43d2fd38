"""Top-n mean tables: every global pooling of a frozen trunk's output, precomputed once.

With the whole trunk frozen, the only thing GAP, GMP, GNAP and LENA (model/lena.py) ever need
from a feature map f_l of K = h * w positions is the top-n mean for some n:

    A_l(n) = (1/n) * sum of the n largest values of f_l,   n = 1..K       table (C, K)
    LENA:  g_l = A_l(N_l), N_l = 1 + ceil(eta_l (K - 1))                  eq. (6)
           dg_l/deta_l = (A_l(N_l + 1) - A_l(N_l - 1)) / (2 delta)        eq. (10)
    GAP = A(K), GMP = A(1), GNAP = A(N) with eta fixed

So one sort per cached view replaces the sort that `LenaPool` does at every training step;
fitting eta and the head on the table gives the same scores and eta gradients as fitting them
on the feature maps (tests/training/test_tables.py), at a small fraction of the cost: what
makes k-fold cross-validation of every recipe, and fold ensembles, affordable on a CPU.
`TableHead` trains a real `ViralityNet`'s pool and head in place, so the network that comes
out is the one the service loads.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx

from model.lena import GlobalAvgPool, GlobalMaxPool, LenaPool, top_n_counts
from model.network import ViralityNet


@torch.no_grad()
def top_mean_table(features: Tensor, chunk: int = 256) -> Tensor:
    """(..., C, h, w) feature maps -> (..., C, K) fp16 table of top-n means A(n), n = 1..K."""
    flat = features.flatten(-2)
    lead = flat.shape[:-2]
    flat = flat.reshape(-1, *flat.shape[-2:])
    out = torch.empty(flat.shape, dtype=torch.float16)
    k = flat.shape[-1]
    counts = torch.arange(1, k + 1, dtype=torch.float32)
    for i in range(0, len(flat), chunk):
        values = torch.sort(flat[i : i + chunk].float(), dim=-1, descending=True).values
        out[i : i + chunk] = (values.cumsum(-1) / counts).half()
    return out.view(*lead, *out.shape[-2:])


class _TableTopMean(torch.autograd.Function):
    """g = A(N(eta)) with eq. (10)'s gradient for eta; the table itself is constant."""

    @staticmethod
    def forward(ctx: FunctionCtx, table: Tensor, eta: Tensor) -> Tensor:  # (B, C, K), (C,)
        b, c, k = table.shape
        n = top_n_counts(eta, k)

        def at(count: Tensor) -> Tensor:  # (C,) in [1, K] -> (B, C)
            return table.gather(-1, (count - 1).view(1, c, 1).expand(b, c, 1)).squeeze(-1)

        if k > 1:
            lower, upper = (n - 1).clamp(min=1), (n + 1).clamp(max=k)
            slope = (at(upper) - at(lower)) / ((upper - lower).to(table.dtype) / (k - 1))
        else:
            slope = torch.zeros(b, c, dtype=table.dtype)
        ctx.save_for_backward(slope)
        return at(n)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[None, Tensor | None]:
        (slope,) = ctx.saved_tensors
        grad_eta = (grad_out * slope).sum(dim=0) if ctx.needs_input_grad[1] else None
        return None, grad_eta


def pool_table(net: ViralityNet, table: Tensor) -> Tensor:
    """net.pool applied through the table: (B, C, K) -> (B, C), as net.pool on the maps."""
    pool, table = net.pool, table.float()
    if isinstance(pool, GlobalAvgPool):
        return table[..., -1]
    if isinstance(pool, GlobalMaxPool):
        return table[..., 0]
    if isinstance(pool, LenaPool):
        return _TableTopMean.apply(table, pool.eta)
    raise TypeError(f"no table form for {type(pool).__name__}")


class TableHead(nn.Module):
    """s = w . pool(table) + b for a ViralityNet whose trunk is frozen; trains net in place."""

    def __init__(self, net: ViralityNet) -> None:
        super().__init__()
        if net.objectness is not None or net.config.members != 1:
            raise ValueError("tables hold the trunk's own output: no objectness, one member")
        self.net = net
        for p in net.trunk.parameters():
            p.requires_grad_(False)

    def forward(self, table: Tensor) -> Tensor:  # (B, C, K) -> (B,)
        return self.net.head(pool_table(self.net, table)).squeeze(-1)
