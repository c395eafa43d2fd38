"""Where a photo's decode time goes, in this process on one thread: decode at each DCT scale, then
the squash to the network input. The floor under bench/decode_size.py's photo-size ratios.

    .venv/bin/python -m bench.decode_parts --checkpoint weights --reps 10

For each of bench/decode_size.py's photo sizes (the same photo-like JPEGs), decodes at the
scales `min_side` = 0 (every pixel), 2x, 1x and 0.5x the network input (`model.images.decode`,
whose `Image.draft` picks the smallest DCT scale with both sides >= min_side; the service uses
2x, `model.images.DECODE_SCALE`) and squashes the result to size x size; with `--checkpoint`,
also one image's forward pass (`Engine.predict`, batch 1) on 1 and on 2 torch threads, the
network's input size taken from the checkpoint. Prints medians in ms.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from bench.decode_size import SIZES, photo_jpeg
from model import images


def median_ms(work: Callable[[], object], reps: int) -> float:
    work()  # warm-up
    seconds = []
    for _ in range(reps):
        started = time.perf_counter()
        work()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds) * 1000.0


def forward_times(checkpoint: Path, reps: int) -> int:
    """Prints one image's forward time on 1 and 2 torch threads; returns the input size."""
    import numpy as np
    import torch

    from app.engine import Engine
    from app.settings import Settings

    engine = Engine.from_settings(Settings(checkpoint=checkpoint, device="cpu"))
    size = engine.input_size
    image = np.full((size, size, 3), 127, dtype=np.uint8)
    threads = torch.get_num_threads()
    for count in (1, 2):
        torch.set_num_threads(count)
        ms = median_ms(partial(engine.predict, [image]), reps)
        print(f"forward pass, batch 1, {size}x{size}, {count} torch thread(s): {ms:.1f} ms")
    torch.set_num_threads(threads)
    print()
    return size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="time its forward pass; its input size")
    parser.add_argument("--size", type=int, default=448, help="the input side, if no checkpoint")
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args()
    if args.checkpoint:
        args.size = forward_times(args.checkpoint, args.reps)
    print("| photo | JPEG KiB | min_side | decoded to | decode ms | squash ms |")
    print("| --- | ---: | ---: | --- | ---: | ---: |")
    for width, height in SIZES:
        data = photo_jpeg(width, height, seed=0)
        for min_side in (0, 2 * args.size, args.size, args.size // 2):
            rgb = images.decode(data, "photo", None, min_side).rgb
            decode = median_ms(partial(images.decode, data, "photo", None, min_side), args.reps)
            squash = median_ms(partial(images.squash, rgb, args.size), args.reps)
            print(
                f"| {width}x{height} | {len(data) // 1024} | {min_side} | "
                f"{rgb.shape[1]}x{rgb.shape[0]} | {decode:.1f} | {squash:.1f} |"
            )


if __name__ == "__main__":
    main()
