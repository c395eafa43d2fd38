"""Uploads to pixels: model.images decodes, this module turns its errors into JSON answers.

Every problem with an upload becomes an `ApiError` that names it and lists what is accepted;
neither Pillow's exceptions nor the decoder's own escape. All functions here block: call them
from a thread pool.
"""

from __future__ import annotations

from app.errors import ApiError
from model import images
from model.images import Prepared, RGBImage

ACCEPTED = list(images.ACCEPTED)

# Each decode failure as (HTTP status, error code).
_ANSWERS: dict[type[images.ImageDecodeError], tuple[int, str]] = {
    images.EmptyImageError: (400, "empty_file"),
    images.UnsupportedFormatError: (415, "unsupported_format"),
    images.TooManyPixelsError: (413, "too_many_pixels"),
    images.CorruptImageError: (400, "corrupt_image"),
}


def api_error(exc: images.ImageDecodeError) -> ApiError:
    """The JSON answer for a decode failure: its status, code and the decoder's message."""
    status, code = _ANSWERS.get(type(exc), (400, "corrupt_image"))
    return ApiError(status, code, str(exc), accepted=ACCEPTED)


def decode(data: bytes, label: str, max_pixels: int) -> RGBImage:
    """The full-size upload as RGB (H, W, 3), for drawing heatmaps over it."""
    try:
        return images.decode(data, label, max_pixels).rgb
    except images.ImageDecodeError as exc:
        raise api_error(exc) from None


def prepare(data: bytes, label: str, max_pixels: int, size: int) -> Prepared:
    """The network's (S, S, 3) input for an upload, decoded as training decodes its files."""
    try:
        return images.prepare(data, size, label, max_pixels)
    except images.ImageDecodeError as exc:
        raise api_error(exc) from None
