"""Virally salient regions as boxes, as in the CAM paper's localisation.

The eq. (7) map is upsampled to the image, thresholded at `fraction` of its maximum (CAM uses
20%) and each connected component becomes a box with its peak and mean map value. Work is done
on a copy at most `WORK_SIDE` pixels on its long side and boxes are scaled back to the image:
the map has only h x w (e.g. 7 x 7) cells, so finer resolution adds nothing but time.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from app.heatmap import upsample

WORK_SIDE = 1024


@dataclass(frozen=True)
class Region:
    x: int  # left, image pixels
    y: int  # top
    width: int
    height: int
    peak: float  # largest map value inside, eq. (7) units
    mean: float  # mean map value inside


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
