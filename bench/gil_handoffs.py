"""What other Python threads cost the CPU forward pass: the GIL hand-off after every torch op.

Each torch op releases the GIL while it computes and takes it back before the next op; when
another thread holds it then (the event loop parsing a request, a decode thread between two
library calls), the engine waits up to `sys.getswitchinterval()` (5 ms by default) per op.
The service's forward pass is a few hundred ops.

This times `Engine.predict` on one batch alone and beside one thread running pure Python
(a stand-in for the event loop under load), at each switch interval given, side by side in
one run. Part of the slowdown is the spinning thread's share of the cores; the rest is waiting
for the GIL, which a shorter interval cuts.

    PYTHONPATH=. .venv/bin/python bench/gil_handoffs.py --checkpoint weights/fast --batch 1 8
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import numpy as np

from app.engine import Engine
from app.settings import Settings


def spin(stop: threading.Event) -> None:
    total = 0
    while not stop.is_set():
        for i in range(1000):
            total += i


def median_ms(engine: Engine, batch: list[np.ndarray], reps: int) -> float:
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        engine.predict(batch)
        times.append(time.perf_counter() - started)
    return 1000 * float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", type=Path, default=Path("weights/fast"))
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--intervals-ms", type=float, nargs="+", default=[5.0, 1.0, 0.5])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    engine = Engine.from_settings(Settings(checkpoint=args.checkpoint, device="cpu"))
    size = engine.input_size
    rng = np.random.default_rng(0)
    print(f"{args.checkpoint}, {size} px, CPU; median of {args.reps}\n")
    print("| batch | switch interval ms | alone ms | beside a Python thread ms | slowdown |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for n in args.batch:
        batch = list(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8))
        engine.predict(batch)  # warm-up
        for interval in args.intervals_ms:
            sys.setswitchinterval(interval / 1000)
            alone = median_ms(engine, batch, args.reps)
            stop = threading.Event()
            spinner = threading.Thread(target=spin, args=(stop,))
            spinner.start()
            try:
                busy = median_ms(engine, batch, args.reps)
            finally:
                stop.set()
                spinner.join()
            print(f"| {n} | {interval:g} | {alone:.0f} | {busy:.0f} | {busy / alone:.2f}x |")


if __name__ == "__main__":
    main()
