"""The spatial transformer's layers against independent references: a direct bilinear pixel
lookup for the crop, hand-derived values and gradients for the spatial penalty."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from model.stn import Localiser, affine_crop, crop_boxes, shrink_penalty, spatial_penalty
from model.viralnet import viralnet_loss

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def bilinear_lookup(img: np.ndarray, u: float, v: float) -> np.ndarray:
    """img (C, H, W) read at pixel coordinates (u, v) (pixel centres at integers), zeros
    outside: the four neighbours weighted by the areas of the opposite rectangles."""
    _, h, w = img.shape
    x0, y0 = math.floor(u), math.floor(v)
    out = np.zeros(img.shape[0])
    for yy, wy in ((y0, 1 - (v - y0)), (y0 + 1, v - y0)):
        for xx, wx in ((x0, 1 - (u - x0)), (x0 + 1, u - x0)):
            if 0 <= xx < w and 0 <= yy < h:
                out += wx * wy * img[:, yy, xx]
    return out


def reference_crop(img: np.ndarray, s: float, tx: float, ty: float, size: int) -> np.ndarray:
    """Output pixel (i, j) sits at x_o = (2j + 1) / size - 1 in [-1, 1]; it reads the input at
    x = s x_o + t_x, i.e. at pixel u = ((x + 1) W - 1) / 2 (the outer pixel edges are -1, 1)."""
    _, h, w = img.shape
    out = np.zeros((img.shape[0], size, size))
    for i in range(size):
        for j in range(size):
            xo, yo = (2 * j + 1) / size - 1, (2 * i + 1) / size - 1
            x, y = s * xo + tx, s * yo + ty
            out[:, i, j] = bilinear_lookup(img, ((x + 1) * w - 1) / 2, ((y + 1) * h - 1) / 2)
    return out


TRANSFORMS = [
    (1.0, 0.0, 0.0),  # the whole image
    (0.5, 0.0, 0.0),  # the centred half
    (0.5, 0.5, -0.5),  # the top-right quarter
    (0.37, -0.21, 0.44),  # off-grid: every output pixel interpolates
    (0.8, 0.6, 0.1),  # partly outside: zeros come in
    (-0.4, 0.1, 0.0),  # a negative scale mirrors
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("s", "tx", "ty"), TRANSFORMS)
def test_affine_crop_matches_a_direct_pixel_lookup(
    s: float, tx: float, ty: float, device: str
) -> None:
    rng = np.random.default_rng(0)
    img = rng.uniform(-1, 1, size=(2, 9, 13))  # non-square, odd sizes: no symmetry to hide in
    params = torch.tensor([[s, tx, ty]], dtype=torch.float64, device=device)
    got = affine_crop(torch.from_numpy(img)[None].to(device), params, 7)[0].cpu().numpy()
    np.testing.assert_allclose(got, reference_crop(img, s, tx, ty, 7), atol=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(("s", "tx", "ty"), TRANSFORMS)
def test_affine_crop_under_cuda_fp16_autocast_matches_the_lookup(
    s: float, tx: float, ty: float
) -> None:
    """The service's path: float16 activations under autocast, float32 transforms."""
    rng = np.random.default_rng(1)
    img = rng.uniform(-1, 1, size=(2, 9, 13))
    images = torch.from_numpy(img)[None].to("cuda", torch.float16)
    params = torch.tensor([[s, tx, ty]], device="cuda")
    with torch.autocast(device_type="cuda", dtype=torch.float16):
        got = affine_crop(images, params, 7)[0].float().cpu().numpy()
    np.testing.assert_allclose(got, reference_crop(img, s, tx, ty, 7), atol=1e-2)


def test_affine_crop_is_vectorised_over_the_batch() -> None:
    rng = np.random.default_rng(1)
    imgs = rng.uniform(0, 1, size=(len(TRANSFORMS), 3, 8, 8))
    params = torch.tensor(TRANSFORMS, dtype=torch.float64)
    got = affine_crop(torch.from_numpy(imgs), params, 5).numpy()
    for b, (s, tx, ty) in enumerate(TRANSFORMS):
        np.testing.assert_allclose(got[b], reference_crop(imgs[b], s, tx, ty, 5), atol=1e-12)


def test_crop_of_the_whole_image_at_its_size_is_the_image() -> None:
    img = torch.rand(1, 3, 6, 6, dtype=torch.float64)
    out = affine_crop(img, torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64), 6)
    torch.testing.assert_close(out, img)


def test_crop_box_is_where_the_crop_reads() -> None:
    """A crop of the box crop_boxes names is all inside a square painted at that box."""
    params = torch.tensor([[0.25, 0.5, -0.25]])  # x in [0.25, 0.75], y in [-0.5, 0]
    x0, y0, x1, y1 = crop_boxes(params)[0].tolist()
    assert (x0, y0, x1, y1) == pytest.approx((0.625, 0.25, 0.875, 0.5))
    img = torch.zeros(1, 1, 32, 32)
    img[..., round(y0 * 32) : round(y1 * 32), round(x0 * 32) : round(x1 * 32)] = 1.0
    crop = affine_crop(img, params, 8)
    assert torch.all(crop == 1.0)


def test_penalty_is_zero_with_zero_gradient_inside_the_image() -> None:
    params = torch.tensor([[0.5, 0.5, -0.5], [1.0, 0.0, 0.0], [0.3, 0.1, 0.2]], requires_grad=True)
    penalty = spatial_penalty(params)
    penalty.sum().backward()
    assert torch.equal(penalty, torch.zeros(3))
    assert params.grad is not None
    assert torch.equal(params.grad, torch.zeros(3, 3))


def test_penalty_value_and_gradient_by_hand_one_side_out() -> None:
    """s = 0.5, t_x = 0.7: the right edge is at 1.2, 0.2 out; nothing else is out.
    L = 0.5 * 0.2^2 = 0.02; dL/ds = dL/dt_x = 0.2; dL/dt_y = 0."""
    params = torch.tensor([[0.5, 0.7, -0.2]], dtype=torch.float64, requires_grad=True)
    penalty = spatial_penalty(params)
    penalty.sum().backward()
    assert penalty.item() == pytest.approx(0.02)
    assert params.grad is not None
    np.testing.assert_allclose(params.grad[0].numpy(), [0.2, 0.2, 0.0], atol=1e-12)


def test_penalty_value_and_gradient_by_hand_too_large() -> None:
    """s = 1.2 centred: all four edges are 0.2 out. L = 0.5 * 4 * 0.04 = 0.08;
    dL/ds = 4 * 0.2 = 0.8; the translations' pulls cancel. A mirrored s = -1.2 is the same
    crop size, so the same penalty, with dL/ds = -0.8."""
    params = torch.tensor([[1.2, 0.0, 0.0], [-1.2, 0.0, 0.0]], dtype=torch.float64)
    params.requires_grad_(True)
    penalty = spatial_penalty(params)
    penalty.sum().backward()
    np.testing.assert_allclose(penalty.detach().numpy(), [0.08, 0.08], atol=1e-12)
    assert params.grad is not None
    np.testing.assert_allclose(params.grad.numpy(), [[0.8, 0, 0], [-0.8, 0, 0]], atol=1e-12)


def test_penalty_matches_finite_differences() -> None:
    params = torch.tensor([[0.9, -0.35, 0.6]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(spatial_penalty, (params,))


def test_shrink_penalty_value_and_gradient_by_hand() -> None:
    """Minimum half-side 0.25: s = 0.1 is 0.15 short, L = 0.0225, dL/ds = -0.3 (a mirrored
    s = -0.1 the same size: +0.3); s = 0.3 is large enough, L = 0 with no gradient; the
    translations never count."""
    params = torch.tensor(
        [[0.1, 0.9, -0.9], [-0.1, 0.0, 0.0], [0.3, 0.5, 0.5]], dtype=torch.float64
    ).requires_grad_(True)
    penalty = shrink_penalty(params, 0.25)
    penalty.sum().backward()
    np.testing.assert_allclose(penalty.detach().numpy(), [0.0225, 0.0225, 0.0], atol=1e-12)
    assert params.grad is not None
    expected = [[-0.3, 0, 0], [0.3, 0, 0], [0, 0, 0]]
    np.testing.assert_allclose(params.grad.numpy(), expected, atol=1e-12)


def test_the_loss_adds_the_shrink_penalty_per_level() -> None:
    """Two levels with minimum half-sides 0.4 and 0.2; one image's crops at 0.3 and 0.3: only
    level 0 is short (by 0.1), so the loss rises by weight * 0.01 over the plain loss."""
    logits, labels = torch.zeros(1), torch.ones(1)
    params = torch.tensor([[[0.3, 0.0, 0.0], [0.3, 0.0, 0.0]]] * 2)  # (2 images, K = 2, 3)
    plain = viralnet_loss(logits, labels, params, 2.0)
    with_min = viralnet_loss(logits, labels, params, 2.0, torch.tensor([0.4, 0.2]))
    assert (with_min - plain).item() == pytest.approx(2.0 * 0.01)


def test_localiser_starts_at_the_centred_crop_for_every_image() -> None:
    loc = Localiser(channels=8, scale_init=0.6)
    out = loc(torch.randn(4, 8, 5, 7))
    torch.testing.assert_close(out, torch.tensor([[0.6, 0.0, 0.0]]).expand(4, 3))


def test_gradient_reaches_the_transform_through_the_sampler() -> None:
    img = torch.linspace(0, 1, 16).view(1, 1, 1, 16).expand(1, 1, 16, 16).contiguous()
    params = torch.tensor([[0.5, 0.0, 0.0]], requires_grad=True)
    affine_crop(img, params, 4).mean().backward()  # brighter to the right: moving right pays
    assert params.grad is not None
    assert params.grad[0, 1] > 0
