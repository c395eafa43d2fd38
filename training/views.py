"""Training images: decoding files and the augmented views the feature cache stores."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from model.images import ImageDecodeError, network_decode, squash
from training.data import DataError


def load_rgb(path: Path, size: int) -> np.ndarray:
    """The image as RGB uint8 (h, w, 3), decoded as the service decodes uploads for a network
    input of size x size (model.images.network_decode: EXIF, alpha over white, 16-bit, ...;
    a JPEG at a reduced DCT scale, still at least twice the input on each side).

    A file that cannot be decoded raises DataError naming it: Pillow's own errors (e.g.
    "image file is truncated") do not say which of a thousand images is at fault.
    """
    try:
        return network_decode(path, size).rgb
    except (ImageDecodeError, OSError) as exc:
        reason = exc.reason if isinstance(exc, ImageDecodeError) else f"{type(exc).__name__}: {exc}"
        raise DataError(
            f"{path}: cannot decode the image ({reason}); re-save or remove it, or train with "
            "--on-bad-image skip"
        ) from exc


def random_view(rgb: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A mild augmentation for photos and memes: crop keeping >= 60% of the area, flip, light
    brightness/contrast jitter. Memes carry text, so no rotations or strong colour changes."""
    h, w = rgb.shape[:2]
    area = rng.uniform(0.6, 1.0)
    aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    ch = int(min(h, round(h * np.sqrt(area / aspect))))
    cw = int(min(w, round(w * np.sqrt(area * aspect))))
    y0, x0 = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    view = squash(rgb[y0 : y0 + ch, x0 : x0 + cw], size)
    if rng.random() < 0.5:
        view = view[:, ::-1]
    gain, bias = rng.uniform(0.85, 1.15), rng.uniform(-20, 20)
    return np.clip(view.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8)


def make_views(rgb: np.ndarray, size: int, n_views: int, rng: np.random.Generator) -> np.ndarray:
    """n_views versions of one image, (V, size, size, 3) uint8: the plain squash first, then
    its mirror, then random views."""
    plain = squash(rgb, size)
    views = [plain, plain[:, ::-1]][:n_views]
    views += [random_view(rgb, size, rng) for _ in range(n_views - len(views))]
    return np.stack(views)
