"""Pixels for the network, the one path for training and serving: decode, squash, normalise.

    bytes or file -> RGB uint8 (H, W, 3) -> squash to (S, S, 3) -> float (B, 3, S, S)

`decode` reads any accepted file (JPEG, PNG, WebP, BMP, TIFF, first GIF frame) as RGB uint8:
oriented by its EXIF tag, transparency (alpha, palette or tRNS colour) composited over white,
16-bit grey scaled by 1/257, CMYK and every other mode converted by Pillow. A JPEG can be
decoded at a reduced scale (libjpeg's DCT scaling, 1/2, 1/4 or 1/8 per side) no smaller than
`min_side` on each side, which skips most of the work on a phone photo; `prepare` decodes at
`DECODE_SCALE` times the network input before squashing, so the network sees the same pixels
whichever package calls it. Other formats have no reduced decode in Pillow and decode in full.

Problems raise an `ImageDecodeError` subclass whose message names the file (`label`);
callers map them to their own errors (the service to JSON answers, training to DataError).
Everything here blocks: the service calls it from a thread pool.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from numpy.typing import NDArray
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from model.backbones import Preprocessing

# Pillow's plugin names (its JPEG opener also opens the multi-picture MPO files cameras write)
# and the same list as people read it.
PILLOW_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")
ACCEPTED = ("JPEG", "PNG", "WebP", "BMP", "TIFF", "GIF (first frame)")
# prepare() decodes a JPEG at no less than DECODE_SCALE x the network input on each side;
# 0 decodes every pixel (benchmarks set it to measure what the reduced decode saves).
DECODE_SCALE = 2
# Bump when decode()'s output for the same file changes: training's input caches are keyed by it.
DECODER_VERSION = 2
_SIXTEEN_BIT_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}
_TURNED = {5, 6, 7, 8}  # EXIF orientations that swap width and height

RGBImage = NDArray[np.uint8]  # (H, W, 3)


class ImageDecodeError(ValueError):
    """A file that is not a usable image. str() names the file; `reason` is the short cause."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class EmptyImageError(ImageDecodeError):
    """The file has no bytes."""


class UnsupportedFormatError(ImageDecodeError):
    """Not an image, or an image in a format outside ACCEPTED."""


class TooManyPixelsError(ImageDecodeError):
    """Width x height (from the header, before decoding) is over the caller's limit."""


class CorruptImageError(ImageDecodeError):
    """The header was read but the pixels could not be decoded (truncated, damaged)."""


@dataclass(frozen=True)
class Decoded:
    """Decoded pixels (possibly at a reduced scale) and the full image's oriented size."""

    rgb: RGBImage  # (h, w, 3)
    width: int
    height: int


@dataclass(frozen=True)
class Prepared:
    """An image ready for the network: its squashed input and its own (oriented) size."""

    pixels: RGBImage  # (S, S, 3)
    width: int
    height: int


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


def _oriented_size(image: Image.Image) -> tuple[int, int]:
    width, height = image.size
    turned = image.getexif().get(ExifTags.Base.Orientation) in _TURNED
    return (height, width) if turned else (width, height)


def _check_pixels(image: Image.Image, label: str, max_pixels: int | None) -> None:
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        raise TooManyPixelsError(
            f"{label} is {width}x{height} = {width * height} pixels; the limit is {max_pixels}. "
            "Downscale it and try again.",
            f"{width}x{height} pixels, over the limit of {max_pixels}",
        )


def _decode_open(image: Image.Image, label: str, max_pixels: int | None, min_side: int) -> Decoded:
    _check_pixels(image, label, max_pixels)  # from the header, before any decoding
    width, height = _oriented_size(image)
    if min_side > 0:
        image.draft(image.mode, (min_side, min_side))  # JPEG only; a no-op elsewhere
    ImageOps.exif_transpose(image, in_place=True)  # in place: no copy when upright
    return Decoded(to_rgb(image), width, height)


def decode(
    source: bytes | Path, label: str | None = None, max_pixels: int | None = None, min_side: int = 0
) -> Decoded:
    """Decode an image (bytes, or a file's path) to RGB uint8, oriented by its EXIF tag.

    max_pixels: refuse a larger width x height, read from the header before decoding.
    min_side: decode a JPEG at the smallest DCT scale with both sides still >= min_side
    (0: full size). `Decoded.width/height` are the full image's size either way.
    Raises an ImageDecodeError subclass naming `label` (default: the path); a path that
    cannot be read raises OSError.
    """
    data = source.read_bytes() if isinstance(source, Path) else source
    label = label if label is not None else str(source)
    if not data:
        raise EmptyImageError(f"{label} is empty (0 bytes).", "empty file")
    try:
        with Image.open(io.BytesIO(data), formats=PILLOW_FORMATS) as image:
            return _decode_open(image, label, max_pixels, min_side)
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise UnsupportedFormatError(
            f"{label} is not an image in an accepted format ({len(data)} bytes, "
            f"starting {data[:8]!r}).",
            f"not one of {', '.join(ACCEPTED)}",
        ) from None
    except Image.DecompressionBombError as exc:  # Pillow's own, larger limit, hit in open()
        limit = f"{max_pixels} pixels" if max_pixels is not None else "Pillow's"
        raise TooManyPixelsError(
            f"{label} is too large; the limit is {limit} ({exc})", str(exc)
        ) from None
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, ... on bad data
        cause = f"{type(exc).__name__}: {exc}"
        raise CorruptImageError(
            f"{label} could not be decoded ({cause}); the file is corrupt or truncated.", cause
        ) from None


def squash(rgb: np.ndarray, size: int) -> np.ndarray:
    """Resize the whole image to size x size (the 'squash' policy: nothing is cropped)."""
    return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)


def network_decode(
    source: bytes | Path, size: int, label: str | None = None, max_pixels: int | None = None
) -> Decoded:
    """`decode` at the scale the network needs: at least DECODE_SCALE * size on each side."""
    return decode(source, label, max_pixels, min_side=DECODE_SCALE * size)


def prepare(
    source: bytes | Path, size: int, label: str | None = None, max_pixels: int | None = None
) -> Prepared:
    """network_decode -> squash: the network's (S, S, 3) input and the image's own size."""
    decoded = network_decode(source, size, label, max_pixels)
    return Prepared(squash(decoded.rgb, size), decoded.width, decoded.height)


def normalise(batch: Tensor, pre: Preprocessing) -> Tensor:
    """uint8 (B, S, S, 3) -> float (B, 3, S, S) with the backbone's mean and std."""
    x = batch.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(pre.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(pre.std, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std
