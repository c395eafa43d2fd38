"""How half precision moves a checkpoint's scores: float32 against float16 / bfloat16 autocast.

The service's percentiles are calibrated on float32 scores, so a precision whose scores shift
moves every percentile with them. For each autocast dtype: the signed mean shift of the scores
from float32, its sd, the largest difference, and the share of image pairs ordered as by
float32 (pairwise agreement, %). One more row rounds only the trunk's output features to
float16 (the heads in float32), which separates the trunk's arithmetic from the last rounding.

Images: `--images DIR` (real ones, e.g. ../shared/data/...; never committed) or generated
640x480 smooth-noise JPEG-like pictures, squashed by the service's own preprocessing.

    PYTHONPATH=. .venv/bin/python bench/half_precision.py --checkpoint weights --count 16
    PYTHONPATH=. python bench/half_precision.py --device cuda --count 512   # on a GPU host
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import cv2
import numpy as np
import torch

from app.images import prepare
from model.checkpoint import load_network
from model.images import normalise
from model.predict import predict


def generated(count: int, size: int) -> list[np.ndarray]:
    pictures = []
    for k in range(count):
        small = np.random.default_rng(k).integers(0, 256, (12, 16, 3), dtype=np.uint8)
        picture = cv2.resize(small, (640, 480), interpolation=cv2.INTER_CUBIC)
        pictures.append(cv2.resize(picture, (size, size), interpolation=cv2.INTER_AREA))
    return pictures


def from_folder(folder: Path, count: int, size: int) -> list[np.ndarray]:
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    return [prepare(p.read_bytes(), p.name, 100_000_000, size).pixels for p in paths[:count]]


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    pairs = list(itertools.combinations(range(len(a)), 2))
    same = sum((a[i] - a[j]) * (b[i] - b[j]) > 0 for i, j in pairs)
    return 100.0 * same / len(pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", type=Path, default=Path("weights"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--count", type=int, default=16)
    parser.add_argument("--images", type=Path, help="a folder of real images")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":  # IEEE float32 as the reference, as the engine's default
        torch.backends.cudnn.conv.fp32_precision = "ieee"  # type: ignore[attr-defined]
    net, info = load_network(args.checkpoint, device)
    size = info.preprocessing.input_size
    pixels = (
        from_folder(args.images, args.count, size) if args.images else generated(args.count, size)
    )
    x = normalise(torch.from_numpy(np.stack(pixels)).to(device), info.preprocessing)
    rows = []
    with torch.inference_mode():
        reference = predict(net, x).scores.double().cpu().numpy()
        for dtype in (torch.float16, torch.bfloat16):
            with torch.autocast(device_type=device.type, dtype=dtype):
                scores = predict(net, x).scores.double().cpu().numpy()
            rows.append((f"{dtype} autocast", scores))
        features = net.feature_maps(x).half().float()
        rows.append(("float32, trunk output rounded to float16", net.score_features(features)))
    print(
        f"{args.checkpoint}, {device}, {len(pixels)} images, {size} px; float32 score sd "
        f"{reference.std():.3f}\n"
    )
    print("| precision | mean shift | sd of shift | max abs diff | pairwise agreement % |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, scores in rows:
        scores = np.asarray(torch.as_tensor(scores).double().cpu())
        shift = scores - reference
        print(
            f"| {name} | {shift.mean():+.4f} | {shift.std():.4f} | {np.abs(shift).max():.4f} "
            f"| {agreement(reference, scores):.2f} |"
        )


if __name__ == "__main__":
    main()
