"""Global pooling layers: GAP, GMP, GNAP and LENA (learned top-N average pooling).

Alameda-Pineda et al., "Viraliency: Pooling Local Virality", CVPR 2017, sections 3.2-3.3.

For a channel map f_l with K = H*W positions and a proportion eta_l in [0, 1]:

    N_l = 1 + ceil(eta_l * (K - 1))                                        (section 3.2)
    g_l = (1 / N_l) * sum of the N_l largest values of f_l                 eq. (6)
    dg_l / df_l(w, h) = 1 / N_l on the N_l selected positions, else 0      eq. (11)
    dg_l / deta_l ~= (A(N_l + 1) - A(N_l - 1)) / (2 * delta)               eq. (10)

with A(n) the top-n mean and delta = 1 / (K - 1); at the ends the difference is one-sided:
(A(2) - A(1)) / delta at N = 1 and (A(K) - A(K - 1)) / delta at N = K. eta = 0 is global max
pooling and eta = 1 global average pooling.

One descending sort per channel map and one cumulative sum give A(N - 1), A(N) and A(N + 1)
for every channel at once. The sort is stable, so ties are broken by position (the earlier
row-major position wins) and the same input always selects, and back-propagates to, the same
N positions. Sorting and sums run in at least float32, also under fp16/bf16 autocast, so the
top-n means of a half-precision input are not rounded at every addition. At N = K the output is
the plain mean (`x.mean`), so eta = 1 is bit-for-bit GAP. N is computed in float64 from the
stored eta; where eta * (K - 1) lies within float32 rounding of an integer j (within
(K - 1) * 2^-23), it is taken as j, so a fixed GNAP eta of j / (K - 1), which float32 may store
a hair above its exact value, selects N = j + 1 and not j + 2. The eta gradient comes back in
eta's own dtype (float64 for a float64 eta).

Without gradients, a layer whose every N is 1 or K (eta 0 or 1: max and mean pooling, as the
shipped checkpoints have) skips the sort: the pooled value is the plain maximum or mean and the
selection mask the first maximum or every position, bit-for-bit what the sorting path gives
(profiled at 448 px, the two sorts were 23% of a CPU forward pass: bench/RESULTS.md). Which
channels are which is worked out once per K and eta value, not per forward pass, so the check
never waits on the device (a CUDA graph capture may not).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx

__all__ = [
    "POOLINGS",
    "GlobalAvgPool",
    "GlobalMaxPool",
    "GlobalPool",
    "LenaPool",
    "build_pool",
    "clamp_etas_",
    "sorted_selection_mask",
]


_FLOAT32_EPS = float(torch.finfo(torch.float32).eps)  # 2^-23


def top_n_counts(eta: Tensor, k: int) -> Tensor:
    """N = 1 + ceil(eta * (K - 1)) per channel, as int64 on eta's device. (C,) -> (C,)

    eta * (K - 1) within (K - 1) * 2^-23 of an integer j counts as j: that is float32's
    rounding of eta = j / (K - 1), which must not push N up to j + 2.
    """
    t = eta.detach().double().clamp(0.0, 1.0) * (k - 1)
    nearest = t.round()
    snapped = torch.where((t - nearest).abs() <= (k - 1) * _FLOAT32_EPS, nearest, t.ceil())
    return (1 + snapped).long()


def _wide(x: Tensor) -> Tensor:
    """x in float32, or float64 if it already is: pooling never sums in half precision."""
    return x if x.dtype == torch.float64 else x.float()


def _sort_desc(x: Tensor) -> tuple[Tensor, Tensor]:
    """Stable descending sort of the last dim, in float32 or better. (B, C, K) -> values, idx"""
    return torch.sort(_wide(x), dim=-1, descending=True, stable=True)


def sorted_selection_mask(x: Tensor, eta: Tensor) -> Tensor:
    """The top-N positions of each channel by a stable descending sort, whatever eta is.
    (B, C, H, W) -> bool (B, C, H, W)"""
    b, c, h, w = x.shape
    _, order = _sort_desc(x.flatten(2))
    n = top_n_counts(eta.to(x.device), h * w)
    return _mask_from_sorted(order, n).view(b, c, h, w)


@dataclass(frozen=True)
class _Ends:
    """Where every N is 1 or K: which channels average (N = K); the rest take their maximum."""

    mean: Tensor  # bool (C,), on the pooled input's device
    kind: str  # "mean" (every channel), "max" (every channel) or "mixed"

    @classmethod
    def of(cls, eta: Tensor, k: int, device: torch.device) -> _Ends | None:
        """None unless every channel's N is 1 or K (then pooling needs no sort)."""
        n = top_n_counts(eta.detach().cpu(), k)
        if not bool(((n == 1) | (n == k)).all()):
            return None
        mean = n == k
        kind = "mean" if bool(mean.all()) else "max" if not bool(mean.any()) else "mixed"
        return cls(mean.to(device), kind)

    def pool(self, x: Tensor) -> Tensor:
        """(B, C, K) -> (B, C) in x's dtype; the sorting path's values exactly."""
        if self.kind == "mean":
            pooled = _wide(x).mean(dim=-1)
        elif self.kind == "max":
            pooled = _wide(x.amax(dim=-1))
        else:
            pooled = torch.where(self.mean, _wide(x).mean(dim=-1), _wide(x.amax(dim=-1)))
        return pooled.to(x.dtype)

    def selection_mask(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> bool: every position where N = K, else the first maximum (the
        position a stable descending sort puts first)."""
        if self.kind == "mean":
            return torch.ones_like(x, dtype=torch.bool)
        b, c, h, w = x.shape
        first = x.flatten(2).argmax(dim=-1, keepdim=True)  # argmax returns the first maximum
        mask = torch.zeros((b, c, h * w), dtype=torch.bool, device=x.device)
        mask.scatter_(-1, first, True)
        mask = mask.view(b, c, h, w)
        return mask if self.kind == "max" else mask | self.mean.view(1, c, 1, 1)


def _mask_from_sorted(order: Tensor, n: Tensor) -> Tensor:
    """Boolean mask of the first n[c] sorted positions, scattered back to the input layout."""
    k = order.shape[-1]
    keep_sorted = torch.arange(k, device=order.device) < n[:, None]  # (C, K)
    keep_sorted = keep_sorted.expand_as(order)  # (B, C, K)
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)


class _TopNMean(torch.autograd.Function):
    """Top-N mean over the last dim with the gradients of eqs. (10) and (11)."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor, eta: Tensor) -> Tensor:  # (B, C, K), (C,)
        b, c, k = x.shape
        values, order = _sort_desc(x)
        cumsum = values.cumsum(dim=-1)  # (B, C, K): cumsum[..., n-1] = sum of the top n
        n = top_n_counts(eta, k)  # (C,)

        def top_mean(count: Tensor) -> Tensor:  # (C,) counts in [1, K] -> (B, C)
            idx = (count - 1).view(1, c, 1).expand(b, c, 1)
            return cumsum.gather(-1, idx).squeeze(-1) / count.to(cumsum.dtype)

        # At N = K, the plain mean: cumsum's order of additions differs from mean()'s by an ulp,
        # and eta = 1 must be GAP exactly.
        pooled = torch.where(n == k, x.to(cumsum.dtype).mean(dim=-1), top_mean(n))
        if k > 1:
            lower, upper = (n - 1).clamp(min=1), (n + 1).clamp(max=k)
            # Central difference of eq. (10); one-sided where N touches 1 or K.
            span = (upper - lower).to(cumsum.dtype) / (k - 1)  # 2*delta inside, delta at ends
            slope = (top_mean(upper) - top_mean(lower)) / span
        else:
            slope = torch.zeros_like(pooled)
        mask = _mask_from_sorted(order, n)  # (B, C, K) bool
        ctx.save_for_backward(mask, n, slope)
        ctx.input_dtype = x.dtype  # type: ignore[attr-defined]
        ctx.eta_dtype = eta.dtype  # type: ignore[attr-defined]
        return pooled.to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, Tensor | None]:
        mask, n, slope = ctx.saved_tensors
        grad_x = grad_eta = None
        if ctx.needs_input_grad[0]:
            wide = torch.promote_types(grad_out.dtype, torch.float32)
            share = grad_out.to(wide) / n  # (B, C): eq. (11); fp16 ends at N = 65504
            grad_x = (mask * share.unsqueeze(-1)).to(ctx.input_dtype)
        if ctx.needs_input_grad[1]:
            grad_eta = (grad_out.to(slope.dtype) * slope).sum(dim=0)  # eq. (8), (10)
            grad_eta = grad_eta.to(ctx.eta_dtype)
        return grad_x, grad_eta


class GlobalPool(nn.Module):
    """A global pooling layer (B, C, H, W) -> (B, C) that can say which positions it used.

    `selection_mask` gives, per channel, the positions N_l of eq. (7) whose values enter the
    pooled output, so a class activation map can be built from exactly what the score used.
    """

    def eta_values(self) -> Tensor:
        """The proportion eta of each channel that is averaged, shape (C,)."""
        raise NotImplementedError

    def selection_mask(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> bool (B, C, H, W): True on the positions the pooling averages."""
        return sorted_selection_mask(x, self.eta_values())


class GlobalAvgPool(GlobalPool):
    """GAP, eq. (2): the mean of every position (eta = 1)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(2, 3))

    def eta_values(self) -> Tensor:
        return torch.ones(self.channels)

    def selection_mask(self, x: Tensor) -> Tensor:
        return torch.ones_like(x, dtype=torch.bool)


class GlobalMaxPool(GlobalPool):
    """GMP, eq. (4): the maximum of each channel (eta = 0); ties go to the first position."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x: Tensor) -> Tensor:
        # max over a dim back-propagates to the single returned index, as eq. (11) wants.
        return x.flatten(2).max(dim=-1).values

    def eta_values(self) -> Tensor:
        return torch.zeros(self.channels)


class LenaPool(GlobalPool):
    """Global learned top-N average pooling (LENA), eqs. (6), (10), (11).

    `eta` is an `nn.Parameter` of shape (C,) holding eta itself. It must stay in [0, 1]:
    call `clamp_eta_` (or `model.lena.clamp_etas_` on a whole network) after each optimiser
    step. With `learnable=False` this is GNAP: top-N average pooling with a fixed eta.
    """

    def __init__(self, channels: int, eta_init: float = 0.5, learnable: bool = True) -> None:
        super().__init__()
        if not 0.0 <= eta_init <= 1.0:
            raise ValueError(f"eta_init must be in [0, 1], got {eta_init}")
        self.eta = nn.Parameter(torch.full((channels,), float(eta_init)), requires_grad=learnable)
        self._ends: dict[tuple[int, str], tuple[tuple[int, int], _Ends | None]] = {}

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, C)
        flat = x.flatten(2)
        needs_grad = torch.is_grad_enabled() and (flat.requires_grad or self.eta.requires_grad)
        ends = None if needs_grad else self.ends(flat.shape[-1], flat.device)
        return ends.pool(flat) if ends is not None else _TopNMean.apply(flat, self.eta)

    def selection_mask(self, x: Tensor) -> Tensor:
        ends = self.ends(x.shape[2] * x.shape[3], x.device)
        return ends.selection_mask(x) if ends is not None else super().selection_mask(x)

    def ends(self, k: int, device: torch.device) -> _Ends | None:
        """Whether every channel's N is 1 or K at K positions (see `_Ends`), remembered until
        eta changes (an optimiser step, `clamp_eta_`, loading weights: its storage or its
        version moves)."""
        stamp = (self.eta.data_ptr(), self.eta._version)
        key = (k, str(device))
        known = self._ends.get(key)
        if known is None or known[0] != stamp:
            known = (stamp, _Ends.of(self.eta, k, device))
            self._ends[key] = known
        return known[1]

    def eta_values(self) -> Tensor:
        return self.eta.detach()

    @torch.no_grad()
    def clamp_eta_(self) -> None:
        self.eta.clamp_(0.0, 1.0)

    def extra_repr(self) -> str:
        eta = self.eta.detach()
        kind = "learned" if self.eta.requires_grad else "fixed"
        return f"channels={eta.numel()}, eta {kind}, mean={eta.mean().item():.3f}"


def clamp_etas_(module: nn.Module) -> None:
    """Keep every LENA eta in [0, 1]; call after each optimiser step."""
    for layer in module.modules():
        if isinstance(layer, LenaPool):
            layer.clamp_eta_()


POOLINGS: dict[str, Callable[[int, float], GlobalPool]] = {
    "gap": lambda channels, eta_init: GlobalAvgPool(channels),
    "gmp": lambda channels, eta_init: GlobalMaxPool(channels),
    "gnap": lambda channels, eta_init: LenaPool(channels, eta_init, learnable=False),
    "lena": lambda channels, eta_init: LenaPool(channels, eta_init, learnable=True),
}  # name -> (channels, eta_init) -> layer; add a pooling here


def build_pool(name: str, channels: int, eta_init: float = 0.5) -> GlobalPool:
    """The pooling layer called `name` (a key of POOLINGS); eta_init is used by gnap and lena."""
    if name not in POOLINGS:
        raise ValueError(f"unknown pooling {name!r}; choose one of {', '.join(POOLINGS)}")
    return POOLINGS[name](channels, eta_init)
