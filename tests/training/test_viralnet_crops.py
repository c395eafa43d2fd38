"""The learned crops move onto the cue: training ViralNet (tiny frozen trunk, the real
localiser, sampler, loss and `train_epoch`) on images whose score is decided by a planted cue
at a known box raises the IoU of the crops with that box (issue 12).

The data: 64 px noise images of a random flat colour (pixel noise std 16); half of them carry
the cue, a luminance checkerboard of 2 px cells (+-80 grey levels) at the same 24 px box in the
top-left quarter, and score 1; the others score 0. Pairs are always cue vs no cue. The crop
starts centred with side 1/2 (32 px), overlapping the box by a 12 px square: IoU 0.099.

Why these choices: the tiny trunk is random, so a weak or colour-only cue either cannot be
ranked by it or gives a crop no reason to move (a flat yellow/blue cue drew the crops into
one cell in 2 of 3 seeds: side -> 0, IoU -> 0); a checkerboard of 2 px cells sits at the
Nyquist limit of the trunk's first stride-2 layer, so (we expect) crops that magnify it see it
better. The localiser's last layer starts at zero with 1,024 inputs, so Adam moves the crop
by tens of times its learning rate per step: loc_lr stays at FitConfig's default 1e-4. The
ranker gets 100 steps of 16 pairs of warm-up first (localiser learning rate 0; since then
FitConfig's own `warmup_steps`, the training default): before the ranker knows the cue, the
crop's gradient points nowhere in particular, and Adam's normalised steps would walk the crop
off at full speed. The figures below were measured before the shrink penalty (`min_crop`,
now on by default) existed; with it, seed 0 still passes.

On seeds 0-5 the mean IoU went from 0.099 to 0.21, 0.22, 0.71, 0.42, 0.82, 0.14 (the test runs
seed 0); the assertion (x 1.25) sits below the weakest. With labels drawn at random instead of
from the cue (seeds 0-2) it ended at 0.108, 0.092, 0.105: the rise comes from the cue, not from
a drift of the crops. With the crops' gradient cut (the sampler fed detached transforms) it
ended at 0.091 (seeds 0-2), and with the localiser's learning rate at 0 the crops do not move
(the control below): the test fails when the localiser cannot learn.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.stn import crop_boxes
from model.viralnet import ViralNet, ViralNetConfig
from training.synthetic import box_iou
from training.viralnet_fit import FitConfig, freeze_trunk, level_cache, train_epoch

SIZE = 64
BOX = (4, 4, 28, 28)  # x0, y0, x1, y1 in pixels, half-open; the same in every cue image
N_IMAGES = 64
BATCH_PAIRS = 16
WARM_UP_STEPS = 100  # ranker only
STEPS = 250  # localiser and ranker


def cue_images(n: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """uint8 (n, SIZE, SIZE, 3) images and bool (n,): whether each carries the cue."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(60, 190, size=(n, 1, 1, 3))
    images = base + rng.normal(0, 16, size=(n, SIZE, SIZE, 3))
    has_cue = np.arange(n) % 2 == 0
    x0, y0, x1, y1 = BOX
    yy, xx = np.mgrid[0 : y1 - y0, 0 : x1 - x0]
    checker = np.where((yy // 2 + xx // 2) % 2 == 0, 80.0, -80.0)
    images[has_cue, y0:y1, x0:x1] += checker[None, :, :, None]
    return torch.from_numpy(np.clip(images, 0, 255).astype(np.uint8)), has_cue


def mean_iou(net: ViralNet, cache: list[torch.Tensor], has_cue: np.ndarray) -> float:
    """Mean IoU of the (unjittered) crops of the cue images with the cue box."""
    with torch.no_grad():
        params = net.transforms([c[torch.from_numpy(has_cue)] for c in cache])[:, 0]
    boxes = crop_boxes(params).numpy() * SIZE
    return float(np.mean([box_iou(b, BOX) for b in boxes]))


def train_crops(loc_lr: float, seed: int = 0) -> tuple[float, float]:
    """Mean IoU of the crops with the cue box before and after training."""
    torch.manual_seed(seed)
    config = ViralNetConfig(backbone="tiny", scales=1, scale_init=0.5, crop_size=32)
    net = ViralNet(config, pretrained=False)
    freeze_trunk(net)
    pixels, has_cue = cue_images(N_IMAGES, seed)
    cache = level_cache(net, pixels)
    # jitter, penalties: the defaults
    cfg = FitConfig(batch_pairs=BATCH_PAIRS, loc_lr=loc_lr, warmup_steps=WARM_UP_STEPS)
    optimiser = torch.optim.Adam(
        [
            {"params": net.localisers.parameters(), "lr": cfg.loc_lr},
            {"params": net.ranker.parameters(), "lr": cfg.lr},
        ],
        weight_decay=cfg.weight_decay,
    )
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    cue, plain = np.flatnonzero(has_cue), np.flatnonzero(~has_cue)
    start = mean_iou(net, cache, has_cue)
    for step in range(0, WARM_UP_STEPS + STEPS, 10):  # ten steps per call
        n = 10 * BATCH_PAIRS
        first = rng.integers(0, 2, n)  # 1: the cue image is the first of its pair
        a, b = rng.choice(cue, n), rng.choice(plain, n)
        pairs = np.where(first[:, None] == 1, np.stack([a, b], 1), np.stack([b, a], 1))
        labels = first.astype(np.float32)
        train_epoch(net, optimiser, pixels, cache, pairs, labels, cfg, gen, step)
    return start, mean_iou(net, cache, has_cue)


def test_the_crops_move_onto_the_cue() -> None:
    start, end = train_crops(loc_lr=1e-4)
    assert start == pytest.approx(144 / (32 * 32 + 24 * 24 - 144), abs=1e-6)
    assert end > 1.25 * start, (start, end)


def test_without_a_localiser_learning_rate_the_crops_stay() -> None:
    """The control: the same run with the localiser's learning rate at 0."""
    start, end = train_crops(loc_lr=0.0)
    assert end == pytest.approx(start, abs=1e-9)
