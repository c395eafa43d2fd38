"""Does a checkpoint still give the same scores and maps? A before/after check for refactors.

The service's Engine scores fixed inputs: the first N DANKMEMES images, decoded and squashed
by OpenCV here (so a change of the project's own decoder does not move them), plus random
uint8 images. Save the scores with the old code, compare with the new:

    mkdir /tmp/before && git archive 260dcff | tar -x -C /tmp/before
    (cd /tmp/before && python /path/to/bench/checkpoint_scores.py --save /tmp/before.npz)
    python bench/checkpoint_scores.py --compare /tmp/before.npz     # max |difference|, <= 1e-5

Runs from the repository root (it imports `app` and `model` from the current directory).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path.cwd()))

from app.engine import Engine

DATA = Path("/work/shared/data/dankmemes2020-task1/images")


def inputs(size: int, n_real: int, n_random: int) -> list[np.ndarray]:
    """(size, size, 3) uint8 RGB images: real ones squashed with INTER_AREA, then noise."""
    images = []
    for path in sorted(DATA.glob("*"))[:n_real]:
        rgb = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        images.append(np.ascontiguousarray(cv2.resize(rgb, (size, size), cv2.INTER_AREA)))
    rng = np.random.default_rng(0)
    images += [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n_random)]
    return images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("weights"))
    parser.add_argument("--real", type=int, default=24, help="DANKMEMES images to score")
    parser.add_argument("--random", type=int, default=8, help="random images to score")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--save", type=Path, help="write scores and maps to this .npz")
    action.add_argument("--compare", type=Path, help="compare with this .npz")
    args = parser.parse_args()
    torch.set_num_threads(1)
    engine = Engine.load(args.checkpoint, "cpu")
    preds = engine.predict(inputs(engine.input_size, args.real, args.random))
    scores = np.array([p.score for p in preds])
    maps = np.stack([p.viraliency for p in preds])
    if args.save:
        np.savez(args.save, scores=scores, maps=maps)
        print(f"saved {len(scores)} scores and maps to {args.save}")
        return
    before = np.load(args.compare)
    print(
        f"{len(scores)} images: max |score difference| "
        f"{np.abs(before['scores'] - scores).max():.3g}, max |map difference| "
        f"{np.abs(before['maps'] - maps).max():.3g}"
    )


if __name__ == "__main__":
    main()
