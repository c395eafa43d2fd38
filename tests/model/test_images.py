"""model.images: what each kind of file decodes to, its errors, and the reduced-scale decode."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model import images
from model.images import (
    CorruptImageError,
    EmptyImageError,
    TooManyPixelsError,
    UnsupportedFormatError,
    decode,
    prepare,
    squash,
)


def photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """Smooth gradients and soft blobs with a little grain, like a camera picture."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x / width, y / height, (x + y) / (width + height)], axis=-1) * 180 + 30
    blobs = np.sin(x[..., None] / (17 + 5 * np.arange(3))) * np.cos(y[..., None] / 23) * 30
    grain = rng.normal(0, 4, (height, width, 3))
    return np.clip(base + blobs + grain, 0, 255).astype(np.uint8)


def save(image: Image.Image | np.ndarray, fmt: str, **options: object) -> bytes:
    pil = image if isinstance(image, Image.Image) else Image.fromarray(image)
    buffer = io.BytesIO()
    pil.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def rotated_exif() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    return exif.tobytes()


def test_sixteen_bit_is_divided_by_257_not_stretched() -> None:
    gray8 = photo(40, 30)[:, :, 0] // 2  # at most 127: stretching would double it
    sixteen = Image.fromarray(gray8.astype(np.uint16) * 257)
    rgb = decode(save(sixteen, "PNG")).rgb
    np.testing.assert_array_equal(rgb, np.repeat(gray8[:, :, None], 3, axis=2))


def test_a_trns_colour_of_an_rgb_png_becomes_white() -> None:
    pixels = photo(40, 30)
    pixels[5:10, 5:20] = (1, 2, 3)
    rgb = decode(save(pixels, "PNG", transparency=(1, 2, 3))).rgb
    assert (rgb[5:10, 5:20] == 255).all()
    keep = np.ones(pixels.shape[:2], bool)
    keep[5:10, 5:20] = False
    np.testing.assert_array_equal(rgb[keep], pixels[keep])


def test_bytes_and_path_decode_alike(tmp_path: Path) -> None:
    data = save(photo(50, 40), "JPEG", quality=90)
    (tmp_path / "a.jpg").write_bytes(data)
    from_path, from_bytes = decode(tmp_path / "a.jpg"), decode(data)
    np.testing.assert_array_equal(from_path.rgb, from_bytes.rgb)


@pytest.mark.parametrize(
    ("data", "error", "words"),
    [
        (b"", EmptyImageError, "is empty (0 bytes)"),
        (b"plain text, no image", UnsupportedFormatError, "not an image in an accepted format"),
        (save(photo(16, 16), "PPM"), UnsupportedFormatError, "not an image in an accepted"),
        (save(photo(60, 50), "PNG")[:200], CorruptImageError, "corrupt or truncated"),
        (save(photo(80, 60), "PNG"), TooManyPixelsError, "80x60 = 4800 pixels; the limit is 4000"),
    ],
    ids=["empty", "text", "ppm", "truncated", "too-many-pixels"],
)
def test_errors_name_the_file_and_the_problem(
    data: bytes, error: type[Exception], words: str
) -> None:
    with pytest.raises(error) as caught:
        decode(data, "upload 'x.bin'", max_pixels=4000)
    assert str(caught.value).startswith("upload 'x.bin' ")
    assert words in str(caught.value)


def test_a_large_jpeg_decodes_at_a_reduced_scale_no_smaller_than_asked() -> None:
    data = save(photo(2016, 1512), "JPEG", quality=90)
    reduced = decode(data, min_side=448)
    assert reduced.rgb.shape == (378 * 2, 504 * 2, 3)  # 1/2: 1/4 would leave 378 < 448
    assert (reduced.width, reduced.height) == (2016, 1512)  # the full image's size
    smaller = decode(data, min_side=100)
    assert smaller.rgb.shape == (189, 252, 3)  # 1/8, the smallest libjpeg offers


def test_the_reduced_decode_keeps_the_exif_orientation() -> None:
    data = save(photo(1800, 1200), "JPEG", quality=90, exif=rotated_exif())
    full, reduced = decode(data), decode(data, min_side=448)
    assert full.rgb.shape == (1800, 1200, 3)
    assert reduced.rgb.shape == (900, 600, 3)
    assert (reduced.width, reduced.height) == (full.width, full.height) == (1200, 1800)


def test_the_reduced_decode_barely_changes_the_network_input() -> None:
    """Squashed to the input size, a 1/4-scale decode differs from the full one by a fraction
    of a grey level on average (both are averages of the same pixels)."""
    data = save(photo(2016, 1512, seed=3), "JPEG", quality=90)
    full = squash(decode(data).rgb, 112).astype(np.int16)
    reduced = squash(decode(data, min_side=224).rgb, 112).astype(np.int16)
    assert decode(data, min_side=224).rgb.shape == (378, 504, 3)
    assert np.abs(full - reduced).mean() < 1.0
    assert np.abs(full - reduced).max() <= 12


def test_prepare_decodes_at_twice_the_input_and_squashes() -> None:
    assert images.DECODE_SCALE == 2
    data = save(photo(1600, 1200), "JPEG", quality=90)
    prepared = prepare(data, 64)
    expected = squash(decode(data, min_side=128).rgb, 64)
    assert decode(data, min_side=128).rgb.shape == (150, 200, 3)  # 1/8 still >= 128
    np.testing.assert_array_equal(prepared.pixels, expected)
    assert (prepared.width, prepared.height) == (1600, 1200)


def test_small_images_and_other_formats_decode_in_full() -> None:
    small = save(photo(400, 300), "JPEG", quality=90)
    assert decode(small, min_side=448).rgb.shape == (300, 400, 3)
    png = save(photo(1000, 900), "PNG")
    assert decode(png, min_side=100).rgb.shape == (900, 1000, 3)
