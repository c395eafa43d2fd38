"""A scale-and-translation spatial transformer (Jaderberg et al. 2015), as ViralNet uses it.

A transform is three numbers p = (s, t_x, t_y) per image, in the normalised coordinates of
`torch.nn.functional.affine_grid` (x, y in [-1, 1], -1 = the left/top edge of the image):

    theta = [[s, 0, t_x],                   an output pixel at (x_o, y_o) in [-1, 1]^2
             [0, s, t_y]]                   samples the input at (s x_o + t_x, s y_o + t_y)

so the crop is the square [t_x - |s|, t_x + |s|] x [t_y - |s|, t_y + |s|] of the input, read
bilinearly (`grid_sample`, zeros outside, align_corners=False: -1 and 1 are the outer pixel
edges, so the coordinates mean the same thing at every resolution of the image).

The spatial penalty (section 3.4.2, after Singh & Lee 2016) punishes the part of the crop that
leaves the image, per side d in {x, y}:

    L_st = 1/2 sum_d [ relu(t_d + |s| - 1)^2 + relu(|s| - t_d - 1)^2 ]

It is 0 exactly when the crop is inside the image (the paper's indicator), and grows with the
squared overshoot, so a transform that crops blank padding to dodge the ranking loss pays.
Our copy of the paper lost its equations; this is the form described in its text.

It does not stop a crop from shrinking towards a point (a few pixels can be easier to rank
than a region). `shrink_penalty` is our addition for that, off in the paper:

    L_min = relu(m - |s|)^2             m: the smallest half-side allowed without paying
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def crop_theta(params: Tensor) -> Tensor:
    """(B, 3) transforms (s, t_x, t_y) -> (B, 2, 3) affine matrices for affine_grid."""
    s, tx, ty = params.unbind(-1)
    zero = torch.zeros_like(s)
    return torch.stack([torch.stack([s, zero, tx], -1), torch.stack([zero, s, ty], -1)], -2)


def affine_crop(images: Tensor, params: Tensor, size: int) -> Tensor:
    """Differentiable crops, resampled to size x size. (B, C, H, W), (B, 3) -> (B, C, size, size)

    Gradients reach both the images and the transforms (through the sampling grid).
    """
    theta = crop_theta(params.to(images.dtype))
    grid = F.affine_grid(theta, [images.shape[0], images.shape[1], size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def spatial_penalty(params: Tensor) -> Tensor:
    """L_st of each transform (see the module docstring). (..., 3) -> (...)"""
    s = params[..., 0].abs()
    t = params[..., 1:]  # (..., 2)
    over_high = F.relu(t + s.unsqueeze(-1) - 1.0)
    over_low = F.relu(s.unsqueeze(-1) - t - 1.0)
    return 0.5 * (over_high.square() + over_low.square()).sum(-1)


def shrink_penalty(params: Tensor, min_scale: Tensor | float) -> Tensor:
    """L_min of each transform (see the module docstring); `min_scale` broadcasts against the
    transforms, e.g. (K,) one per pyramid level. (..., 3) -> (...)"""
    return F.relu(min_scale - params[..., 0].abs()).square()


def crop_boxes(params: Tensor) -> Tensor:
    """Crop squares as fractions of the image: (..., 3) -> (..., 4) = (x0, y0, x1, y1) in [0, 1]
    when inside (multiply by width and height for pixels; 0.5 is the image centre)."""
    s = params[..., 0].abs()
    tx, ty = params[..., 1], params[..., 2]
    return torch.stack([tx - s + 1, ty - s + 1, tx + s + 1, ty + s + 1], -1) / 2


class Localiser(nn.Module):
    """The localisation network: trunk features of one pyramid level -> (s, t_x, t_y).

    (B, L, h, w) -> 1x1 conv to `hidden` channels, ReLU, adaptive average pool to a grid x grid
    map (where things are), a linear layer -> (B, 3). The last layer starts at zero weights with
    bias (s0, 0, 0): every image starts at the centred crop of side s0 (Singh & Lee's
    initialisation), and training moves it.
    """

    def __init__(self, channels: int, scale_init: float, hidden: int = 64, grid: int = 4) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, hidden, kernel_size=1)
        self.grid = grid
        self.out = nn.Linear(hidden * grid * grid, 3)
        with torch.no_grad():
            self.out.weight.zero_()
            self.out.bias.copy_(torch.tensor([scale_init, 0.0, 0.0]))

    def forward(self, features: Tensor) -> Tensor:  # (B, L, h, w) -> (B, 3)
        z = F.adaptive_avg_pool2d(F.relu(self.reduce(features)), self.grid)  # (B, hidden, g, g)
        return self.out(z.flatten(1))
