"""Virally salient regions as boxes, as in the CAM paper's localisation.

The eq. (7) map is upsampled to the image, thresholded at `fraction` of its maximum (CAM uses
20%) and each connected component becomes a box with its peak and mean map value. Work is done
on a copy at most `WORK_SIDE` pixels on its long side and boxes are scaled back to the image:
the map has only h x w (e.g. 7 x 7) cells, so finer resolution adds nothing but time.

A ViralNet has its own regions: the crops of its spatial transformers, one per pyramid level
(`crop_regions`), each with the level's scale and the map's peak and mean inside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from app.engine import Engine
from app.heatmap import HeatmapOptions, draw, upsample
from app.images import prepare
from app.store import StoredImage
from model.predict import level_scales

WORK_SIDE = 1024


@dataclass(frozen=True)
class Region:
    x: int  # left, image pixels
    y: int  # top
    width: int
    height: int
    peak: float  # largest map value inside, eq. (7) units
    mean: float  # mean map value inside
    scale: float | None = None  # ViralNet: the pyramid level the crop was taken from (1, 0.5, ..)


def salient_regions(
    viraliency: NDArray[np.float32],
    width: int,
    height: int,
    fraction: float = 0.2,
    max_regions: int = 10,
) -> list[Region]:
    """Boxes around the parts of the map above fraction * max, highest peak first."""
    scale = min(1.0, WORK_SIDE / max(width, height))
    work_w, work_h = max(1, round(width * scale)), max(1, round(height * scale))
    values = upsample(viraliency, work_w, work_h).astype(np.float64)  # (work_h, work_w)
    top = float(values.max())
    if top <= 0.0:
        return []  # nothing raises virality anywhere
    mask = (values >= fraction * top).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    flat_labels: NDArray[np.intp] = labels.ravel().astype(np.intp)
    flat_values = values.ravel()
    sums = np.bincount(flat_labels, weights=flat_values, minlength=count)
    peaks = np.full(count, -np.inf)
    np.maximum.at(peaks, flat_labels, flat_values)
    sx, sy = width / work_w, height / work_h
    regions = []
    for label in range(1, count):  # 0 is the background
        x, y, w, h, area = (int(v) for v in stats[label])
        left, upper = int(x * sx), int(y * sy)
        right, lower = min(width, round((x + w) * sx)), min(height, round((y + h) * sy))
        regions.append(
            Region(
                left,
                upper,
                right - left,
                lower - upper,
                float(peaks[label]),
                float(sums[label] / area),
            )
        )
    regions.sort(key=lambda r: r.peak, reverse=True)
    return regions[:max_regions]


def crop_regions(
    transforms: NDArray[np.float32],
    viraliency: NDArray[np.float32],
    width: int,
    height: int,
) -> list[Region]:
    """A ViralNet's crops as boxes in image pixels, level 0 (full resolution) first.

    transforms (K, 3) = (s, t_x, t_y) per level: the crop spans t -|s|..t + |s| in [-1, 1]
    coordinates (model/stn.py), so x0 = (t_x - |s| + 1) / 2 * width; clipped to the image.
    """
    scale = min(1.0, WORK_SIDE / max(width, height))
    work_w, work_h = max(1, round(width * scale)), max(1, round(height * scale))
    values = upsample(viraliency, work_w, work_h).astype(np.float64)
    regions = []
    for (s, tx, ty), level_scale in zip(transforms, level_scales(len(transforms)), strict=True):
        x0, x1 = _span(float(tx), abs(float(s)), width)
        y0, y1 = _span(float(ty), abs(float(s)), height)
        wx0, wx1 = min(int(x0 * scale), work_w - 1), max(1, round(x1 * scale))
        wy0, wy1 = min(int(y0 * scale), work_h - 1), max(1, round(y1 * scale))
        inside = values[wy0 : max(wy1, wy0 + 1), wx0 : max(wx1, wx0 + 1)]
        peak, mean = float(inside.max()), float(inside.mean())
        regions.append(Region(x0, y0, x1 - x0, y1 - y0, peak, mean, level_scale))
    return regions


def _span(centre: float, half: float, side: int) -> tuple[int, int]:
    """[-1, 1] interval centre +- half -> pixels [start, end), clipped, at least one pixel."""
    start = min(side - 1, max(0, int(np.floor((centre - half + 1) / 2 * side))))
    end = max(start + 1, min(side, int(np.ceil((centre + half + 1) / 2 * side))))
    return start, end


def stored_crop_regions(engine: Engine, stored: StoredImage, max_pixels: int) -> list[Region]:
    """Blocking: a kept image's crop boxes; decodes the upload again and runs its localisers
    (the boxes are a function of the image, so nothing more needs keeping per image)."""
    prepared = prepare(stored.upload, "stored image", max_pixels, engine.input_size)
    transforms = engine.crop_transforms(prepared.pixels)
    return crop_regions(transforms, stored.viraliency, stored.width, stored.height)


def draw_explained(
    stored: StoredImage, options: HeatmapOptions, max_pixels: int, engine: Engine
) -> bytes:
    """Blocking: the heatmap of a kept image, with a ViralNet's crops outlined over it (one
    colour per pyramid level); a LENA network's heatmap alone."""
    boxes = [
        (r.x, r.y, r.width, r.height)
        for r in (stored_crop_regions(engine, stored, max_pixels) if engine.localises else [])
    ]
    return draw(stored, options, max_pixels, boxes)
