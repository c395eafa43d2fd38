"""Uploads to pixels: format checks, bomb checks, EXIF orientation, any mode -> RGB uint8.

Every problem with an upload becomes an `ApiError` that names it and lists what is accepted;
Pillow's own exceptions never escape. All functions here block: call them from a thread pool.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps, UnidentifiedImageError

from app.errors import ApiError
from model.images import squash  # the training's own resize: serving must match it

# Pillow's plugin names (its JPEG opener also opens the multi-picture MPO files cameras write).
PILLOW_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")
ACCEPTED = ["JPEG", "PNG", "WebP", "BMP", "TIFF", "GIF (first frame)"]
_SIXTEEN_BIT_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}

RGBImage = NDArray[np.uint8]  # (H, W, 3)


@dataclass(frozen=True)
class Prepared:
    """An upload ready for the network: its squashed input and its own (oriented) size."""

    pixels: RGBImage  # (S, S, 3)
    width: int
    height: int


def _bad_image(status: int, code: str, message: str) -> ApiError:
    return ApiError(status, code, message, accepted=ACCEPTED)


def _check_pixels(image: Image.Image, label: str, max_pixels: int) -> None:
    width, height = image.size
    if width * height > max_pixels:
        raise _bad_image(
            413,
            "too_many_pixels",
            f"{label} is {width}x{height} = {width * height} pixels; the limit is {max_pixels}. "
            "Downscale it and try again.",
        )


def _sixteen_bit_to_rgb(image: Image.Image) -> RGBImage:
    values = np.asarray(image).astype(np.float32)  # (H, W), 0..65535
    gray = np.clip(values / 257.0 + 0.5, 0, 255).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


def to_rgb(image: Image.Image) -> RGBImage:
    """Any Pillow mode as RGB uint8; transparency is composited over white. -> (H, W, 3)"""
    if image.mode in _SIXTEEN_BIT_MODES:
        return _sixteen_bit_to_rgb(image)
    if image.mode == "F":
        return np.asarray(image.convert("L").convert("RGB"), dtype=np.uint8)
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"), dtype=np.uint8)
    if image.mode == "RGB":
        return np.asarray(image, dtype=np.uint8)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def decode(data: bytes, label: str, max_pixels: int) -> RGBImage:
    """Decode an upload to RGB, oriented by its EXIF tag, after checking its header's size."""
    if not data:
        raise _bad_image(400, "empty_file", f"{label} is empty (0 bytes).")
    try:
        with Image.open(io.BytesIO(data), formats=PILLOW_FORMATS) as image:
            _check_pixels(image, label, max_pixels)  # from the header, before any decoding
            ImageOps.exif_transpose(image, in_place=True)  # in place: no copy when upright
            return to_rgb(image)
    except ApiError:
        raise
    except UnidentifiedImageError:
        raise _bad_image(
            415,
            "unsupported_format",
            f"{label} is not an image in an accepted format ({len(data)} bytes, "
            f"starting {data[:8]!r}).",
        ) from None
    except Image.DecompressionBombError as exc:  # Pillow's own, larger limit, hit in open()
        raise _bad_image(
            413,
            "too_many_pixels",
            f"{label} is too large; the limit is {max_pixels} pixels ({exc})",
        ) from None
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, ... on bad data
        raise _bad_image(
            400,
            "corrupt_image",
            f"{label} could not be decoded ({type(exc).__name__}: {exc}); "
            "the file is corrupt or truncated.",
        ) from None


def prepare(data: bytes, label: str, max_pixels: int, size: int) -> Prepared:
    """decode -> squash: everything a thread does for one upload before the batch."""
    rgb = decode(data, label, max_pixels)
    height, width = rgb.shape[:2]
    return Prepared(squash(rgb, size), width, height)
