"""Viraliency maps as pictures: pure functions, arrays in, uint8 images or bytes out; and
`draw`, the blocking job behind GET and POST /heatmap (decode the photo, render, encode).

A heatmap is drawn at most DEFAULT_MAX_SIDE pixels on its longer side unless the request's
max_side says otherwise: a 12-megapixel photo's full-size PNG is ~18 MB of mostly smooth colour.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
from numpy.typing import NDArray

from app.images import decode
from app.store import StoredImage

# OpenCV's colormaps by their lower-case names: jet, inferno, turbo, viridis, ...
COLORMAPS: dict[str, int] = {
    name.removeprefix("COLORMAP_").lower(): getattr(cv2, name)
    for name in sorted(dir(cv2))
    if name.startswith("COLORMAP_")
}

ImageFormat = Literal["png", "jpeg"]
MEDIA_TYPES: dict[str, str] = {"png": "image/png", "jpeg": "image/jpeg"}
DEFAULT_MAX_SIDE = 1600


@dataclass(frozen=True)
class HeatmapOptions:
    """How to draw a heatmap."""

    alpha: float = 0.5
    colormap: str = "jet"
    image_format: ImageFormat = "png"
    mode: Literal["overlay", "map"] = "overlay"
    max_side: int = DEFAULT_MAX_SIDE


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


def drawn_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The image's size, scaled down to fit max_side x max_side (keeping its aspect ratio)."""
    if max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def draw(
    stored: StoredImage,
    options: HeatmapOptions,
    max_pixels: int,
    boxes: Sequence[tuple[int, int, int, int]] = (),
) -> bytes:
    """Blocking: decode the photo again (unless mode=map), render, encode. `boxes` (x, y,
    width, height in the stored image's pixels; a ViralNet's crops) are outlined over it."""
    width, height = drawn_size(stored.width, stored.height, options.max_side)
    photo = None if options.mode == "map" else decode(stored.upload, "stored image", max_pixels)
    if photo is not None and (width, height) != (stored.width, stored.height):
        photo = np.asarray(
            cv2.resize(photo, (width, height), interpolation=cv2.INTER_AREA), dtype=np.uint8
        )
    rgb = render(
        stored.viraliency,
        width,
        height,
        photo=photo,
        colormap=options.colormap,
        alpha=options.alpha,
    )
    if boxes:
        sx, sy = width / stored.width, height / stored.height
        scaled = [
            (round(x * sx), round(y * sy), round(w * sx), round(h * sy)) for x, y, w, h in boxes
        ]
        rgb = outline(rgb, scaled)
    return encode(rgb, options.image_format)
