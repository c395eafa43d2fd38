"""The synthetic localisation benchmark: the generator, the metrics, and a tiny learning run."""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np
import pytest
import torch

from model.images import normalise
from model.network import NetworkConfig, ViralityNet
from training.accuracy import all_ordered_pairs, pair_accuracy
from training.config import TrainConfig
from training.fit import fit
from training.synthetic import (
    box_from_map,
    box_iou,
    localisation_metrics,
    make_synthetic_set,
    pointing_hit,
    upsample_map,
)

YELLOW_MINUS_BLUE = np.array([255.0, 230.0, 0.0]) - np.array([0.0, 40.0, 255.0])


# --- the generator ------------------------------------------------------------------------


def test_deterministic_for_a_seed_and_prefix_stable() -> None:
    a = make_synthetic_set(12, size=48, seed=3)
    b = make_synthetic_set(12, size=48, seed=3)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    head = make_synthetic_set(5, size=48, seed=3)
    np.testing.assert_array_equal(head.images, a.images[:5])
    np.testing.assert_array_equal(head.boxes, a.boxes[:5])
    other = make_synthetic_set(12, size=48, seed=4)
    assert not np.array_equal(other.images, a.images)


def test_shapes_dtypes_and_boxes_inside_the_image() -> None:
    size = 40
    s = make_synthetic_set(80, size=size, seed=0)
    assert s.images.shape == (80, size, size, 3)
    assert s.images.dtype == np.uint8
    assert s.scores.shape == (80,)
    assert s.boxes.shape == (80, 4)
    assert np.issubdtype(s.boxes.dtype, np.integer)
    assert set(np.unique(s.scores)) == {0.0, 1.0, 2.0, 3.0}  # every level occurs
    cue = s.has_cue()
    np.testing.assert_array_equal(cue, s.scores > 0)
    assert (s.boxes[~cue] == -1).all()
    x0, y0, x1, y1 = s.boxes[cue].T
    assert (x0 >= 0).all()
    assert (y0 >= 0).all()
    assert (x1 <= size).all()
    assert (y1 <= size).all()
    np.testing.assert_array_equal(x1 - x0, y1 - y0)  # square cues
    # The cue's side is set by its level: one side per level, growing with it.
    sides = {lvl: set((x1 - x0)[s.scores[cue] == lvl]) for lvl in (1.0, 2.0, 3.0)}
    assert all(len(v) == 1 for v in sides.values())
    assert min(sides[1.0]) < min(sides[2.0]) < min(sides[3.0])


def checker_responses(image: np.ndarray, side: int) -> np.ndarray:
    """For a 4 x 4 checkerboard of this side at each top-left (y, x), and for each of its four
    2 x 2-cell quadrants: the mean colour on the even cells minus the mean on the odd cells.
    (H, W, 3) -> (4, H - side + 1, W - side + 1, 3)"""
    cell = np.arange(side) * 4 // side
    even = (cell[:, None] + cell[None, :]) % 2 == 0
    img = image.astype(np.float32)
    out = []
    for qy in (0, 1):
        for qx in (0, 1):
            quadrant = ((cell[:, None] // 2) == qy) & ((cell[None, :] // 2) == qx)
            plus, minus = (even & quadrant), (~even & quadrant)
            template = (plus / plus.sum() - minus / minus.sum()).astype(np.float32)
            out.append(
                np.stack(
                    [cv2.matchTemplate(img[..., c], template, cv2.TM_CCORR) for c in range(3)],
                    axis=-1,
                )
            )
    return np.stack(out)


def yellow_blue_checker(image: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """How strong a yellow/blue checkerboard of this side is at each top-left position: the
    weakest of its quadrants' projections on yellow - blue, and how purely yellow/blue it is
    (the cosine of the whole board's response with yellow - blue)."""
    d = checker_responses(image, side)
    unit = YELLOW_MINUS_BLUE / np.linalg.norm(YELLOW_MINUS_BLUE)
    strength = (d @ unit).min(axis=0)
    whole = d.mean(axis=0)
    cosine = (whole @ unit) / (np.linalg.norm(whole, axis=-1) + 1e-9)
    return strength, cosine


def test_the_cue_is_at_its_box_and_strengthens_with_the_score() -> None:
    s = make_synthetic_set(60, size=48, seed=5)
    sides = np.unique((s.boxes[:, 2] - s.boxes[:, 0])[s.has_cue()])
    strength_at_box: dict[float, list[float]] = {1.0: [], 2.0: [], 3.0: []}
    for image, score, box in zip(s.images, s.scores, s.boxes, strict=True):
        if score == 0:
            # No cue: no window of any cue side holds a clear yellow/blue checkerboard.
            for side in sides:
                strength, cosine = yellow_blue_checker(image, int(side))
                assert (strength * (cosine > 0.98)).max() < 75.0
            continue
        x0, y0, x1, y1 = (int(v) for v in box)
        strength, cosine = yellow_blue_checker(image, x1 - x0)
        assert strength[y0, x0] > 90.0
        assert cosine[y0, x0] > 0.98
        # A detector sliding over the whole image finds the planted box, decoys notwithstanding.
        best = np.unravel_index(np.argmax(strength * (cosine > 0.98)), strength.shape)
        found = (best[1], best[0], best[1] + x1 - x0, best[0] + y1 - y0)
        assert box_iou(found, box) > 0.5
        strength_at_box[float(score)].append(float(strength[y0, x0]))
    means = [np.mean(strength_at_box[lvl]) for lvl in (1.0, 2.0, 3.0)]
    assert means[0] < means[1] < means[2]  # a higher score is a stronger cue


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="n must be"):
        make_synthetic_set(-1)
    with pytest.raises(ValueError, match="size must be"):
        make_synthetic_set(3, size=8)


# --- the metrics --------------------------------------------------------------------------


def test_upsample_map_is_bilinear_with_aligned_pixel_centres() -> None:
    out = upsample_map(np.array([[0.0, 1.0], [2.0, 3.0]]), (4, 4))
    # Output pixel centre i maps to source (i + 0.5) / 2 - 0.5, clamped to [0, 1].
    f = np.array([0.0, 0.25, 0.75, 1.0])
    np.testing.assert_allclose(out, 2 * f[:, None] + f[None, :], atol=1e-6)
    wide = upsample_map(np.full((2, 3), 7.0), (4, 6))  # size is (height, width)
    assert wide.shape == (4, 6)
    np.testing.assert_allclose(wide, 7.0)


def test_pointing_hit_uses_half_open_boxes() -> None:
    m = np.zeros((10, 10))
    m[3, 7] = 5.0  # row (y) 3, column (x) 7
    assert pointing_hit(m, (5, 2, 8, 4))
    assert pointing_hit(m, (7, 3, 8, 4))  # a one-pixel box
    assert not pointing_hit(m, (0, 0, 7, 10))  # x1 = 7 excludes column 7
    assert not pointing_hit(m, (5, 4, 9, 9))  # peak above the box


def test_box_from_map_keeps_the_largest_component_not_the_highest() -> None:
    m = np.zeros((20, 20))
    m[2:5, 3:7] = 1.0  # 12 pixels, holds the maximum
    m[10:17, 10:16] = 0.5  # 42 pixels, above 0.2 of the maximum
    assert box_from_map(m, 0.2) == (10, 10, 16, 17)
    assert box_from_map(m, 0.6) == (3, 2, 7, 5)  # the large blob is now below the threshold


def test_box_from_map_threshold_is_strict_and_relative() -> None:
    m = np.full((5, 5), 0.1)
    m[1:4, 1:4] = 0.3
    m[2, 2] = 1.0
    assert box_from_map(m, 0.2) == (1, 1, 4, 4)
    assert box_from_map(m, 0.5) == (2, 2, 3, 3)
    # Thresholds are relative to the range of the map: shifting or scaling changes nothing.
    assert box_from_map(10.0 * m + 4.0, 0.5) == (2, 2, 3, 3)
    # 0.3 is above 0.2 of the range (0.1 .. 1.0) only once the minimum is taken off.
    assert box_from_map(m, 0.25) == (2, 2, 3, 3)
    assert box_from_map(np.ones((3, 4)), 0.2) == (0, 0, 4, 3)  # constant: the whole map


def test_box_from_map_connects_diagonals() -> None:
    m = np.zeros((8, 8))
    m[1, 1] = m[2, 2] = m[3, 3] = 1.0  # one 8-connected component of 3 pixels
    m[6, 5:7] = 1.0  # 2 pixels
    assert box_from_map(m) == (1, 1, 4, 4)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ((0, 0, 10, 10), (5, 5, 15, 15), 25 / 175),
        ((0, 0, 10, 10), (0, 0, 10, 10), 1.0),
        ((0, 0, 10, 10), (0, 0, 5, 10), 0.5),
        ((0, 0, 2, 2), (3, 3, 5, 5), 0.0),
        ((0, 0, 2, 2), (2, 0, 4, 2), 0.0),  # touching edges share no pixel
        ((2, 1, 6, 4), (4, 0, 8, 2), 2 / 18),  # 4x3 and 4x2, overlap 2x1
    ],
)
def test_box_iou(a: tuple[int, ...], b: tuple[int, ...], expected: float) -> None:
    assert box_iou(a, b) == pytest.approx(expected)
    assert box_iou(b, a) == pytest.approx(expected)


def test_localisation_metrics_by_hand() -> None:
    maps = np.array([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0, 0]]])
    boxes = np.array([[0, 0, 2, 2], [0, 0, 2, 2], [-1, -1, -1, -1]])
    loc = localisation_metrics(maps, boxes, (4, 4), threshold=0.2)
    # Upsampled, map 0 is (1 - fy)(1 - fx) with f = 0, .25, .75, 1: above 0.2 on the 3 x 3
    # top-left corner but for (2, 2), so its box is (0, 0, 3, 3): IoU 4/9 with (0, 0, 2, 2),
    # and its peak is inside. Map 1 is the mirror image: box (1, 1, 4, 4), IoU 1/12, peak
    # outside. Map 2 has no cue and does not count.
    assert loc.count == 2
    assert loc.pointing == pytest.approx(0.5)
    assert loc.iou == pytest.approx((4 / 9 + 1 / 12) / 2)
    assert loc.iou_at_30 == pytest.approx(0.5)


# --- a tiny end-to-end run ----------------------------------------------------------------


@pytest.fixture
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: threads only add overhead on a shared CPU
    try:
        yield
    finally:
        torch.set_num_threads(before)


def to_inputs(images: np.ndarray, net: ViralityNet) -> torch.Tensor:
    return normalise(torch.from_numpy(images), net.preprocessing)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("pooling", ["gap", "gmp", "lena"])
def test_pooling_learns_the_cue_and_points_at_it(pooling: str) -> None:
    size = 48
    train = make_synthetic_set(384, size=size, seed=0)
    val = make_synthetic_set(100, size=size, seed=1)
    test = make_synthetic_set(200, size=size, seed=2)
    torch.manual_seed(0)
    net = ViralityNet(NetworkConfig(backbone="tiny", pooling=pooling, eta_init=0.5), False)
    cfg = TrainConfig(
        backbone="tiny",
        pooling=pooling,
        epochs=8,
        batch_pairs=32,
        pairs_per_epoch=384,
        protocol="ratio",
        ratio=1.25,  # every two different levels 0..3 qualify: (hi + 1) >= 1.25 (lo + 1)
        lr=3e-3,
        seed=0,
    )
    train_views = to_inputs(train.images, net)[None]  # one view: no augmentation
    result = fit(net, train_views, train.scores, to_inputs(val.images, net), val.scores, cfg)
    net.load_state_dict(result.model_state)
    net.eval()
    with torch.no_grad():
        scores, maps = net.viraliency(to_inputs(test.images, net))
    accuracy = pair_accuracy(scores.numpy(), all_ordered_pairs(test.scores))
    loc = localisation_metrics(maps.numpy(), test.boxes, (size, size))
    box = test.boxes[test.has_cue()]
    chance = float(np.mean((box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1]))) / size**2
    assert accuracy > 0.75, (accuracy, result.history)
    # A random point hits the cue box about 6% of the time; the learned map, far more often.
    assert loc.pointing > max(0.3, 4 * chance), (loc, chance)
