"""Training images: decoding files and the augmented views the feature cache stores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from model.images import squash
from training.data import DataError


def load_rgb(path: Path) -> np.ndarray:
    """Any image Pillow reads, EXIF-rotated, as RGB uint8 (H, W, 3); alpha over white.

    A file that cannot be decoded raises DataError naming it: Pillow's own errors (e.g.
    "image file is truncated") do not say which of a thousand images is at fault.
    """
    try:
        return _decode_rgb(path)
    except Exception as exc:  # Pillow raises many exception types for corrupt files
        raise DataError(
            f"{path}: cannot decode the image ({type(exc).__name__}: {exc}); re-save or remove "
            f"it, or train with --on-bad-image skip"
        ) from exc


def _decode_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as opened:
        opened.seek(0)  # first frame of a GIF
        img: Image.Image = ImageOps.exif_transpose(opened)
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            img = Image.alpha_composite(white, rgba)
        elif img.mode.startswith("I;16") or img.mode == "I":
            # 16-bit greyscale: scale to 8 bits rather than clip (Pillow's convert clips).
            wide = np.asarray(img, dtype=np.float64)
            img = Image.fromarray((wide * (255.0 / max(wide.max(), 1.0))).astype(np.uint8))
        return np.asarray(img.convert("RGB"))


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
