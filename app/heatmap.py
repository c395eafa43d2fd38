"""Viraliency maps as pictures: pure functions, arrays in, uint8 images or bytes out."""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
from numpy.typing import NDArray

# OpenCV's colormaps by their lower-case names: jet, inferno, turbo, viridis, ...
COLORMAPS: dict[str, int] = {
    name.removeprefix("COLORMAP_").lower(): getattr(cv2, name)
    for name in sorted(dir(cv2))
    if name.startswith("COLORMAP_")
}

ImageFormat = Literal["png", "jpeg"]
MEDIA_TYPES: dict[str, str] = {"png": "image/png", "jpeg": "image/jpeg"}


def upsample(viraliency: NDArray[np.float32], width: int, height: int) -> NDArray[np.float32]:
    """Bilinear upsampling of an eq. (7) map to an image size. (h, w) -> (height, width)"""
    values = np.ascontiguousarray(viraliency, dtype=np.float32)
    resized = cv2.resize(values, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.asarray(resized, dtype=np.float32)


def to_unit_range(values: NDArray[np.float32]) -> NDArray[np.uint8]:
    """Min-max scale to 0..255 (a constant map is all 0): the colour shows where, not how much."""
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (values - low) * (255.0 / (high - low))
    return np.clip(scaled + 0.5, 0, 255).astype(np.uint8)


def render(
    viraliency: NDArray[np.float32],
    width: int,
    height: int,
    photo: NDArray[np.uint8] | None = None,
    colormap: str = "jet",
    alpha: float = 0.5,
) -> NDArray[np.uint8]:
    """The coloured map at width x height, blended over `photo` (RGB) if one is given.

    out = alpha * colour + (1 - alpha) * photo. -> (height, width, 3) uint8 RGB
    """
    levels = to_unit_range(upsample(viraliency, width, height))
    bgr = cv2.applyColorMap(levels, COLORMAPS[colormap])
    colour = np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8)
    if photo is None:
        return colour
    if photo.shape[:2] != (height, width):
        raise ValueError(f"photo is {photo.shape[1]}x{photo.shape[0]}, expected {width}x{height}")
    return np.asarray(cv2.addWeighted(colour, alpha, photo, 1.0 - alpha, 0.0), dtype=np.uint8)


def encode(rgb: NDArray[np.uint8], image_format: ImageFormat, jpeg_quality: int = 90) -> bytes:
    """RGB uint8 -> PNG or JPEG bytes."""
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if image_format == "png":
        ok, buffer = cv2.imencode(".png", bgr)
    else:
        ok, buffer = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {rgb.shape} image as {image_format}")
    return buffer.tobytes()


# One colour per pyramid level (RGB): full resolution white, 1/2 yellow, 1/4 cyan, then magenta.
BOX_COLOURS = ((255, 255, 255), (255, 220, 0), (0, 220, 255), (255, 0, 220))


def outline(
    rgb: NDArray[np.uint8], boxes: list[tuple[int, int, int, int]], thickness: int = 2
) -> NDArray[np.uint8]:
    """A copy of rgb with each (x, y, width, height) box outlined, in BOX_COLOURS order."""
    out = np.ascontiguousarray(rgb).copy()
    for i, (x, y, w, h) in enumerate(boxes):
        colour = BOX_COLOURS[min(i, len(BOX_COLOURS) - 1)]
        cv2.rectangle(out, (x, y), (x + max(w, 1) - 1, y + max(h, 1) - 1), colour, thickness)
    return out
