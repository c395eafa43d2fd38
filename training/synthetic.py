"""A controlled localisation benchmark: synthetic images whose virality sits at a known box.

Real engagement labels cannot say whether a viraliency map points at the right place, so here
the score of an image is decided by one planted local cue at a known box:

- background: smooth coloured noise (a random mean colour plus upsampled low-frequency noise),
- distractors: 3 to 6 shapes drawn at random among filled circles, rectangles, triangles and
  thick lines in random colours, and textured decoys: stripes in random colours, stripes in
  the cue's own two colours, and checkerboards in other colour pairs (sharing one colour with
  the cue at most); decoys are drawn at full contrast, so they are often louder than the cue,
- the cue: a 4 x 4 yellow/blue checkerboard drawn last (never covered), whose *strength*
  level 1, 2 or 3 sets both its side (3/16, 4/16, 5/16 of the image side) and its contrast
  (0.3, 0.45, 0.6: the blend of yellow/blue with the mean colour it covers); the score of the
  image is its level,
- a quarter of the images (level 0) have no cue and score 0; their box is (-1, -1, -1, -1),
- pixel noise (std 16 grey levels) over everything, cue included.

So only a detector of this pattern in these two colours can rank the images, and a map that
merely follows contrast, colour or texture points at the decoys.

Boxes are (x0, y0, x1, y1), half-open in pixels: a pixel (x, y) is inside when
x0 <= x < x1 and y0 <= y < y1; the area is (x1 - x0) * (y1 - y0).

Image i of `make_synthetic_set(n, size, seed)` depends only on (seed, i, size), so a larger set
with the same seed starts with the smaller one.

The localisation metrics are pure numpy functions: `upsample_map` (a feature-resolution map to
image resolution, bilinear), `pointing_hit` (the pointing game: the map's maximum falls in the
box), `box_from_map` (the box of the CAM paper, Zhou et al. 2016: threshold the map at a
fraction of its maximum, bounding box of the largest connected component) and `box_iou`.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "CUE_COLOURS",
    "LEVELS",
    "Localisation",
    "SyntheticSet",
    "box_from_map",
    "box_iou",
    "cue_pattern",
    "localisation_metrics",
    "make_synthetic_set",
    "pointing_hit",
    "upsample_map",
]

LEVELS = (0, 1, 2, 3)  # cue strength; 0 = no cue. The score of an image is its level.
_CUE_SIDE = {1: 3 / 16, 2: 4 / 16, 3: 5 / 16}  # fraction of the image side
_CUE_CONTRAST = {1: 0.3, 2: 0.45, 3: 0.6}
CUE_COLOURS = ((255.0, 230.0, 0.0), (0.0, 40.0, 255.0))  # the checkerboard's two RGB colours
# Checkerboard decoys: each pair differs from the cue's in at least one colour.
_DECOY_PAIRS = (
    (CUE_COLOURS[0], (220.0, 30.0, 30.0)),  # yellow / red
    (CUE_COLOURS[0], (20.0, 160.0, 40.0)),  # yellow / green
    ((0.0, 220.0, 220.0), CUE_COLOURS[1]),  # cyan / blue
    ((240.0, 240.0, 240.0), CUE_COLOURS[1]),  # white / blue
    ((230.0, 0.0, 200.0), (20.0, 20.0, 20.0)),  # magenta / black
)
_CELLS = 4  # the cue is a CELLS x CELLS checkerboard
_PIXEL_NOISE = 16.0  # std of the final per-pixel noise, in grey levels


@dataclass
class SyntheticSet:
    images: np.ndarray  # uint8 (N, H, W, 3), RGB
    scores: np.ndarray  # float64 (N,): the cue level, 0 when there is no cue
    boxes: np.ndarray  # int64 (N, 4): x0, y0, x1, y1 (half-open); -1s where there is no cue

    def __len__(self) -> int:
        return len(self.scores)

    def has_cue(self) -> np.ndarray:
        """bool (N,): the images with a planted cue (and so a box)."""
        return self.boxes[:, 0] >= 0


def cue_pattern(side: int) -> np.ndarray:
    """bool (side, side): True on the checkerboard cells drawn in the first cue colour."""
    cell = np.arange(side) * _CELLS // side
    return ((cell[:, None] + cell[None, :]) % 2) == 0


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    base = rng.uniform(60.0, 190.0, size=3)
    coarse = rng.normal(0.0, 35.0, size=(max(2, size // 8), max(2, size // 8), 3))
    smooth = cv2.resize(coarse.astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    return base + smooth.astype(np.float64)


def _colour(rng: np.random.Generator) -> tuple[float, float, float]:
    r, g, b = rng.uniform(0.0, 255.0, size=3)
    return (float(r), float(g), float(b))


def _draw_distractor(rng: np.random.Generator, img: np.ndarray) -> None:
    size = img.shape[0]
    kind = int(rng.integers(7))
    cx, cy = (int(v) for v in rng.integers(0, size, size=2))
    extent = max(2, int(rng.uniform(0.06, 0.16) * size))
    colour = _colour(rng)
    if kind == 0:
        cv2.circle(img, (cx, cy), extent, colour, thickness=-1, lineType=cv2.LINE_AA)
    elif kind == 1:
        w, h = (max(2, int(v)) for v in rng.uniform(0.5, 1.5, size=2) * extent)
        cv2.rectangle(img, (cx - w, cy - h), (cx + w, cy + h), colour, thickness=-1)
    elif kind == 2:
        pts = (np.array([cx, cy]) + rng.uniform(-1.5, 1.5, size=(3, 2)) * extent).astype(np.int32)
        cv2.fillPoly(img, [pts], colour, lineType=cv2.LINE_AA)
    elif kind == 3:
        end = (np.array([cx, cy]) + rng.uniform(-3.0, 3.0, size=2) * extent).astype(int)
        thickness = max(1, int(rng.integers(1, 4)) * size // 64)
        end_pt = (int(end[0]), int(end[1]))
        cv2.line(img, (cx, cy), end_pt, colour, thickness, lineType=cv2.LINE_AA)
    else:  # a textured patch that is not the cue
        side = 2 * extent
        x0, y0 = max(0, cx - extent), max(0, cy - extent)
        patch = img[y0 : y0 + side, x0 : x0 + side]
        if kind == 4:  # stripes in random colours
            first, second = colour, _colour(rng)
        elif kind == 5:  # stripes in the cue's own colours
            first, second = CUE_COLOURS
        else:  # a checkerboard in other colours, keeping one cue colour at most
            first, second = _DECOY_PAIRS[int(rng.integers(len(_DECOY_PAIRS)))]
        if kind == 6:
            mask = cue_pattern(side)
        else:
            stripes = (np.arange(side) * 2 * _CELLS // side) % 2 == 0
            stripes = stripes[:, None] if rng.integers(2) else stripes[None, :]
            mask = np.broadcast_to(stripes, (side, side))
        mask = mask[: patch.shape[0], : patch.shape[1]]
        patch[mask] = first
        patch[~mask] = second


def _draw_cue(rng: np.random.Generator, img: np.ndarray, level: int) -> tuple[int, int, int, int]:
    size = img.shape[0]
    side = max(_CELLS, round(_CUE_SIDE[level] * size))
    x0, y0 = (int(v) for v in rng.integers(0, size - side + 1, size=2))
    region = img[y0 : y0 + side, x0 : x0 + side]
    local = region.mean(axis=(0, 1))  # the cue's contrast is relative to what it covers
    alpha = _CUE_CONTRAST[level]
    first = np.asarray(CUE_COLOURS[0]) * alpha + local * (1.0 - alpha)
    second = np.asarray(CUE_COLOURS[1]) * alpha + local * (1.0 - alpha)
    pattern = cue_pattern(side)
    region[pattern] = first
    region[~pattern] = second
    return x0, y0, x0 + side, y0 + side


def _make_image(seed: int, index: int, size: int) -> tuple[np.ndarray, int, tuple[int, ...]]:
    rng = np.random.default_rng([seed, index, size])
    level = int(rng.integers(len(LEVELS)))
    img = _background(rng, size)
    for _ in range(int(rng.integers(3, 7))):
        _draw_distractor(rng, img)
    box: tuple[int, ...] = (-1, -1, -1, -1)
    if level > 0:
        box = _draw_cue(rng, img, level)
    img += rng.normal(0.0, _PIXEL_NOISE, size=img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), level, box


def make_synthetic_set(n: int, size: int = 64, seed: int = 0) -> SyntheticSet:
    """n RGB images of size x size, their scores (the cue level) and the cue boxes."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if size < 16:
        raise ValueError(f"size must be >= 16, got {size}")
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    scores = np.empty(n, dtype=np.float64)
    boxes = np.empty((n, 4), dtype=np.int64)
    for i in range(n):
        images[i], level, box = _make_image(seed, i, size)
        scores[i] = float(level)
        boxes[i] = box
    return SyntheticSet(images, scores, boxes)


# --- localisation metrics -------------------------------------------------------------------


def upsample_map(map_hw: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A (h, w) map resized to size = (height, width), bilinear (pixel centres aligned)."""
    height, width = size
    src = np.asarray(map_hw, dtype=np.float32)
    return cv2.resize(src, (width, height), interpolation=cv2.INTER_LINEAR)


def pointing_hit(map_full: np.ndarray, box: np.ndarray | tuple[int, ...]) -> bool:
    """Pointing game: whether the map's maximum (first one in row-major order) is in the box."""
    y, x = np.unravel_index(int(np.argmax(map_full)), map_full.shape)
    x0, y0, x1, y1 = (int(v) for v in box)
    return bool(x0 <= x < x1 and y0 <= y < y1)


def box_from_map(map_full: np.ndarray, threshold: float = 0.2) -> tuple[int, int, int, int]:
    """The CAM paper's box: keep the values above `threshold` of the maximum, then the
    bounding box (half-open) of the largest 8-connected component.

    As in the CAM paper's code, the map is first shifted so that its minimum is 0 (a map that
    is never negative is unchanged). A constant map gives the whole image.
    """
    m = np.asarray(map_full, dtype=np.float64)
    m = m - m.min()
    peak = m.max()
    height, width = m.shape
    if not peak > 0:
        return (0, 0, width, height)
    mask = (m > threshold * peak).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    largest = 1 + int(np.argmax(stats[1:count, cv2.CC_STAT_AREA]))  # label 0 is background
    x, y, w, h = (int(v) for v in stats[largest, :4])
    return (x, y, x + w, y + h)


def box_iou(a: np.ndarray | tuple[int, ...], b: np.ndarray | tuple[int, ...]) -> float:
    """Intersection over union of two half-open (x0, y0, x1, y1) boxes."""
    ax0, ay0, ax1, ay1 = (float(v) for v in a)
    bx0, by0, bx1, by1 = (float(v) for v in b)
    inter = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class Localisation:
    pointing: float  # share of images whose map maximum is in the cue box
    iou: float  # mean IoU of box_from_map against the cue box
    iou_at_30: float  # share of images whose IoU is >= 0.3 (the overlap of the paper's 4.5)
    count: int  # images with a cue that were scored


def localisation_metrics(
    maps: np.ndarray, boxes: np.ndarray, image_size: tuple[int, int], threshold: float = 0.2
) -> Localisation:
    """Pointing game and IoU of `box_from_map` over the images that have a box.

    maps: (N, h, w) at feature resolution, upsampled to image_size = (height, width);
    boxes: (N, 4) with -1s where there is no cue (those images are skipped).
    """
    hits, ious = [], []
    for map_hw, box in zip(maps, boxes, strict=True):
        if box[0] < 0:
            continue
        full = upsample_map(map_hw, image_size)
        hits.append(pointing_hit(full, box))
        ious.append(box_iou(box_from_map(full, threshold), box))
    if not hits:
        return Localisation(float("nan"), float("nan"), float("nan"), 0)
    iou = np.asarray(ious)
    return Localisation(
        float(np.mean(hits)), float(iou.mean()), float(np.mean(iou >= 0.3)), len(hits)
    )
