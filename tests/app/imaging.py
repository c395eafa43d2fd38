"""Real images for the tests: structured pixels, encoded by Pillow or OpenCV."""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image

RGB = NDArray[np.uint8]


def photo(width: int = 96, height: int = 72, seed: int = 0) -> RGB:
    """A gradient with a few filled shapes and some noise: varied, and different per seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack(
        [x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], axis=-1
    ).astype(np.uint8)
    bgr = np.ascontiguousarray(base[:, :, ::-1])
    for _ in range(4):
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.circle(bgr, centre, int(rng.integers(4, max(5, width // 3))), colour, -1)
    noise = rng.integers(-12, 13, bgr.shape)
    return np.clip(bgr[:, :, ::-1].astype(int) + noise, 0, 255).astype(np.uint8)


def encode(image: Image.Image | RGB, fmt: str = "JPEG", **options: Any) -> bytes:
    pil = image if isinstance(image, Image.Image) else Image.fromarray(image)
    buffer = io.BytesIO()
    pil.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def jpeg(width: int = 96, height: int = 72, seed: int = 0) -> bytes:
    return encode(photo(width, height, seed), "JPEG", quality=92)


def png_declaring_size(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose IHDR (with a correct CRC) claims width x height: a bomb header."""
    data = encode(Image.new("RGB", (1, 1)), "PNG")
    ihdr_start = 8  # after the signature: length (4), type (4), data (13), crc (4)
    body = bytearray(data[ihdr_start + 8 : ihdr_start + 8 + 13])
    body[0:8] = struct.pack(">II", width, height)
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(body)) & 0xFFFFFFFF)
    return data[: ihdr_start + 8] + bytes(body) + crc + data[ihdr_start + 8 + 13 + 4 :]


def jpeg_declaring_size(width: int, height: int) -> bytes:
    """A valid small JPEG whose SOF0 frame header claims width x height: a bomb header."""
    data = bytearray(jpeg(16, 16))
    sof = data.index(b"\xff\xc0")  # marker, length (2), precision (1), height (2), width (2)
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def multipart(*images: bytes, field: str = "images") -> list[tuple[str, tuple[str, bytes]]]:
    """httpx `files=` for a repeated field, named img0.bin, img1.bin, ..."""
    return [(field, (f"img{i}.bin", data)) for i, data in enumerate(images)]
