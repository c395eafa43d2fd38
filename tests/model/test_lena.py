"""LenaPool against an independent float64 reference of eqs. (6), (10) and (11)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from model.lena import (
    GlobalAvgPool,
    GlobalMaxPool,
    LenaPool,
    build_pool,
    clamp_etas_,
    sorted_selection_mask,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def snapped_ceil(t: float, k: int) -> int:
    """ceil(t), except that t within float32 rounding of an integer, (K - 1) * 2^-23, is it."""
    return round(t) if abs(t - round(t)) <= (k - 1) * 2.0**-23 else math.ceil(t)


def reference(x: np.ndarray, eta: np.ndarray, grad_out: np.ndarray):
    """Per channel, with plain loops: forward, input gradient and eta gradient."""
    b, c, h, w = x.shape
    k = h * w
    out = np.zeros((b, c))
    grad_x = np.zeros_like(x)
    grad_eta = np.zeros(c)
    for i in range(b):
        for ch in range(c):
            v = x[i, ch].reshape(-1)
            order = np.argsort(-v, kind="stable")  # ties: earlier position first
            n = 1 + snapped_ceil(float(eta[ch]) * (k - 1), k)

            def top_mean(m: int, v=v, order=order) -> float:
                return float(v[order[:m]].sum() / m)

            out[i, ch] = top_mean(n)
            g = grad_x[i, ch].reshape(-1)
            g[order[:n]] = grad_out[i, ch] / n
            if k == 1:
                slope = 0.0
            elif n == 1:
                slope = (top_mean(2) - top_mean(1)) * (k - 1)
            elif n == k:
                slope = (top_mean(k) - top_mean(k - 1)) * (k - 1)
            else:
                slope = (top_mean(n + 1) - top_mean(n - 1)) * (k - 1) / 2
            grad_eta[ch] += grad_out[i, ch] * slope
    return out, grad_x, grad_eta


def run_layer(x: np.ndarray, eta: np.ndarray, grad_out: np.ndarray, device: str):
    layer = LenaPool(x.shape[1]).to(device)
    with torch.no_grad():
        layer.eta.copy_(torch.from_numpy(eta))
    xt = torch.tensor(x, dtype=torch.float64, device=device, requires_grad=True)
    out = layer(xt)
    out.backward(torch.tensor(grad_out, device=device))
    return out.detach().cpu().numpy(), xt.grad.cpu().numpy(), layer.eta.grad.cpu().numpy()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    ("hw", "etas", "tied"),
    [
        ((7, 7), [0.0, 1.0, 0.5, 0.01, 0.99, 0.3141, 0.7777, 1 / 48 + 1e-3], False),
        ((1, 2), [0.0, 1.0, 0.4, 0.6], False),  # K = 2: N is 1 or 2, both one-sided
        ((3, 5), [0.0, 0.07, 0.5, 0.93, 1.0], False),
        ((1, 1), [0.0, 0.5], False),  # K = 1: the only value, no eta gradient
        ((6, 6), [0.0, 0.2, 0.5, 0.8, 1.0], True),  # values in {0, 1, 2}: the earlier one wins
    ],
)
def test_matches_reference(device: str, hw: tuple[int, int], etas: list[float], tied: bool) -> None:
    rng = np.random.default_rng(0)
    shape = (3, len(etas), *hw)
    x = rng.integers(0, 3, size=shape).astype(np.float64) if tied else rng.normal(size=shape)
    eta = np.array(etas)
    grad_out = rng.normal(size=(3, len(etas)))
    got = run_layer(x, eta, grad_out, device)
    want = reference(x, eta.astype(np.float32), grad_out)  # the layer stores eta in float32
    np.testing.assert_allclose(got[0], want[0], rtol=1e-12, atol=1e-12, err_msg="forward")
    np.testing.assert_allclose(got[1], want[1], rtol=1e-12, atol=1e-12, err_msg="grad_x")
    # eta is a float32 parameter, so its gradient comes back in float32.
    np.testing.assert_allclose(got[2], want[2], rtol=1e-6, atol=1e-6, err_msg="grad_eta")


@pytest.mark.parametrize("device", DEVICES)
def test_float64_eta_gets_a_float64_gradient(device: str) -> None:
    """With eta and x in float64, nothing is rounded to float32: the reference agrees to 1e-12."""
    rng = np.random.default_rng(1)
    etas = np.array([0.0, 0.123456789012345, 0.5, 0.987654321098765, 1.0])
    x = rng.normal(size=(3, len(etas), 7, 7))
    grad_out = rng.normal(size=(3, len(etas)))
    layer = LenaPool(len(etas)).double().to(device)
    with torch.no_grad():
        layer.eta.copy_(torch.from_numpy(etas))
    xt = torch.tensor(x, device=device, requires_grad=True)
    layer(xt).backward(torch.tensor(grad_out, device=device))
    assert layer.eta.grad is not None
    assert layer.eta.grad.dtype == torch.float64
    want = reference(x, etas, grad_out)[2]
    np.testing.assert_allclose(layer.eta.grad.cpu().numpy(), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("hw", [(7, 7), (5, 4), (14, 14)])
def test_fixed_eta_of_j_over_k_minus_1_selects_j_plus_1(device: str, hw: tuple[int, int]) -> None:
    """GNAP with eta = j / (K - 1), stored in float32, averages exactly the top j + 1 values."""
    k = hw[0] * hw[1]
    etas = torch.arange(k, dtype=torch.float64) / (k - 1)
    rounded_up = (etas.float().double() * (k - 1) > torch.arange(k)).sum()
    assert rounded_up > 0  # the premise: float32 stores some of these etas a hair too high
    layer = build_pool("gnap", k).to(device)
    assert isinstance(layer, LenaPool)
    with torch.no_grad():
        layer.eta.copy_(etas)
    x = torch.randn(2, k, *hw, device=device, dtype=torch.float64)
    counts = layer.selection_mask(x).sum(dim=(2, 3))
    assert counts.tolist() == [list(range(1, k + 1))] * 2
    top = x.flatten(2).sort(dim=-1, descending=True).values.cumsum(-1)  # (B, K, K)
    want = top.diagonal(dim1=1, dim2=2) / torch.arange(1, k + 1, device=device)
    torch.testing.assert_close(layer(x), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_limits_are_max_and_mean(device: str) -> None:
    x = torch.randn(4, 6, 5, 7, device=device)
    as_max, as_mean = LenaPool(6, eta_init=0.0).to(device), LenaPool(6, eta_init=1.0).to(device)
    for x_ in (x, x.double()):
        assert torch.equal(as_max(x_), x_.amax(dim=(2, 3)))
        assert torch.equal(as_mean(x_), x_.mean(dim=(2, 3)))
        assert torch.equal(as_mean(x_), GlobalAvgPool(6)(x_))
        assert torch.equal(as_max(x_), GlobalMaxPool(6)(x_))


@pytest.mark.parametrize("device", DEVICES)
def test_ties_are_deterministic_and_select_exactly_n(device: str) -> None:
    x = torch.randint(0, 3, (2, 4, 6, 6), device=device).float()  # many ties
    layer = LenaPool(4, eta_init=0.3).to(device)
    n = 1 + math.ceil(float(layer.eta.detach()[0]) * 35)
    grads = []
    for _ in range(3):
        xr = x.clone().requires_grad_(True)
        layer(xr).sum().backward()
        grads.append(xr.grad)
    assert all(torch.equal(grads[0], g) for g in grads[1:])
    assert ((grads[0] != 0).sum(dim=(2, 3)) == n).all()
    mask = layer.selection_mask(x)
    assert torch.equal(mask, grads[0] != 0)  # the map's positions are the gradient's


def sorted_pool(layer: LenaPool, x: torch.Tensor) -> torch.Tensor:
    """The layer's output by the sorting path (gradients on, which the sort-free path skips)."""
    with torch.enable_grad():
        return layer(x.detach().clone().requires_grad_(True)).detach()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("etas", [[0.0] * 6, [1.0] * 6, [0.0, 1.0, 1.0, 0.0, 0.0, 1.0]])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_without_gradients_etas_of_0_and_1_pool_as_the_sort_does(
    device: str, etas: list[float], layout: str, dtype: torch.dtype
) -> None:
    """The sort-free path (max / mean, first maximum / every position) is bit-for-bit the
    sorting path, ties included: the mask is still where the gradient goes."""
    x = torch.randint(0, 4, (3, 6, 7, 5), device=device).to(dtype)  # many ties
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    layer = LenaPool(6).to(device)
    with torch.no_grad():
        layer.eta.copy_(torch.tensor(etas))
    with torch.no_grad():
        fast = layer(x)
    assert layer.ends(35, x.device) is not None  # the sort-free path was the one taken
    assert fast.dtype == dtype
    assert torch.equal(fast, sorted_pool(layer, x))
    mask = layer.selection_mask(x)
    assert torch.equal(mask, sorted_selection_mask(x, layer.eta_values()))
    xr = x.clone().requires_grad_(True)
    layer(xr).sum().backward()
    assert xr.grad is not None
    assert torch.equal(mask, xr.grad != 0)
    with torch.inference_mode():
        assert torch.equal(layer(x), fast)


def test_the_sort_free_path_is_forgotten_when_eta_changes() -> None:
    x = torch.randn(2, 3, 4, 4)
    layer = LenaPool(3, eta_init=1.0)
    with torch.no_grad():
        assert torch.equal(layer(x), x.mean(dim=(2, 3)))
        layer.eta.fill_(0.5)  # N = 1 + ceil(0.5 * 15) = 9: only the sort knows the top 9
        assert layer.ends(16, x.device) is None
        top9 = x.flatten(2).sort(dim=-1, descending=True).values[..., :9].mean(dim=-1)
        torch.testing.assert_close(layer(x), top9)
        assert (layer.selection_mask(x).sum(dim=(2, 3)) == 9).all()
        layer.load_state_dict({"eta": torch.zeros(3)})  # loading weights moves it too
        assert torch.equal(layer(x), x.amax(dim=(2, 3)))


@pytest.mark.parametrize("device", DEVICES)
def test_selection_mask_counts_n_from_max_to_mean(device: str) -> None:
    k = 5 * 4
    etas = [0.0, 0.5 / (k - 1), 0.5, 1 - 1e-3, 1.0]  # N = 1, 2, 11, K, K
    layer = LenaPool(len(etas)).to(device)
    with torch.no_grad():
        layer.eta.copy_(torch.tensor(etas))
    mask = layer.selection_mask(torch.randn(2, len(etas), 5, 4, device=device))
    counts = [1 + math.ceil(float(np.float32(eta)) * (k - 1)) for eta in etas]
    assert counts == [1, 2, 11, k, k]
    assert mask.sum(dim=(2, 3)).tolist() == [counts, counts]


@pytest.mark.parametrize("device", DEVICES)
def test_autocast_matches_the_reference_on_half_precision_features(device: str) -> None:
    """Under autocast a conv hands the layer half-precision maps; the layer's output and both
    gradients must still be those of eqs. (6), (10), (11) on exactly those values."""
    dtype = torch.float16 if device == "cuda" else torch.bfloat16
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 8, kernel_size=3, padding=1).to(device)
    layer = LenaPool(8, eta_init=0.37).to(device)
    with torch.no_grad():
        layer.eta.copy_(torch.linspace(0, 1, 8))
    with torch.autocast(device_type=device, dtype=dtype):
        f = conv(torch.randn(2, 3, 7, 7, device=device))
        f.retain_grad()
        out = layer(f)
    assert f.dtype == dtype
    grad_out = torch.randn(2, 8, device=device).to(dtype)  # what reaches the layer
    out.backward(grad_out)
    want, want_grad, want_eta_grad = reference(
        f.detach().double().cpu().numpy(),
        layer.eta.detach().cpu().numpy(),
        grad_out.double().cpu().numpy(),
    )
    np.testing.assert_allclose(out.float().detach().cpu().numpy(), want, rtol=1e-2, atol=1e-2)
    assert torch.equal((f.grad != 0).cpu(), torch.from_numpy(want_grad != 0))
    np.testing.assert_allclose(f.grad.float().cpu().numpy(), want_grad, rtol=1e-2, atol=1e-3)
    np.testing.assert_allclose(
        layer.eta.grad.cpu().numpy(), want_eta_grad, rtol=1e-4, atol=1e-4, err_msg="grad_eta"
    )


def train_eta(target: str, steps: int = 60) -> float:
    """Fit pool(x) to the max or the mean of x by moving eta alone; returns the final eta."""
    torch.manual_seed(0)
    layer = LenaPool(1, eta_init=0.5)
    opt = torch.optim.SGD(layer.parameters(), lr=0.05)
    for _ in range(steps):
        x = torch.randn(32, 1, 6, 6)
        y = x.amax(dim=(2, 3)) if target == "max" else x.mean(dim=(2, 3))
        loss = torch.nn.functional.mse_loss(layer(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        clamp_etas_(layer)
    return float(layer.eta.detach())


def test_eta_learns_towards_max_or_mean() -> None:
    assert train_eta("max") < 0.15
    assert train_eta("mean") > 0.85


def test_eta_is_clamped_to_unit_interval() -> None:
    layer = LenaPool(3, eta_init=0.5)
    opt = torch.optim.SGD(layer.parameters(), lr=1e6)
    layer(torch.randn(2, 3, 4, 4)).sum().backward()
    opt.step()
    clamp_etas_(layer)
    assert (layer.eta >= 0).all()
    assert (layer.eta <= 1).all()


def test_baselines_by_name() -> None:
    x = torch.randn(2, 5, 4, 4, requires_grad=True)
    assert isinstance(build_pool("gap", 5), GlobalAvgPool)
    assert isinstance(build_pool("gmp", 5), GlobalMaxPool)
    gnap, lena = build_pool("gnap", 5, 0.25), build_pool("lena", 5, 0.25)
    assert isinstance(gnap, LenaPool)
    assert isinstance(lena, LenaPool)
    assert not gnap.eta.requires_grad
    assert lena.eta.requires_grad
    torch.testing.assert_close(gnap(x), lena(x))
    torch.testing.assert_close(build_pool("gmp", 5)(x), LenaPool(5, 0.0)(x))
    build_pool("gmp", 5)(x).sum().backward()  # GMP sends gradient to one position per channel
    assert ((x.grad != 0).sum(dim=(2, 3)) == 1).all()
    with pytest.raises(ValueError, match="unknown pooling"):
        build_pool("median", 5)
    with pytest.raises(ValueError, match="eta_init"):
        LenaPool(5, eta_init=1.5)
