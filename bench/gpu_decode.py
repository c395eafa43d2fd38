"""Decode + squash throughput: the CPU decoder on N threads vs batched decode on a device.

The CPU side is the service's `app.images.prepare` (Pillow + OpenCV INTER_AREA) on a thread
pool; the batched side is `app.gpu_decode.prepare_jpegs` (torchvision `decode_jpeg` on a list:
nvJPEG on CUDA, libjpeg-turbo on the CPU; area resize on the same device) at each batch size.
Both on the same generated 640x480 JPEGs; also the mean absolute pixel difference between the
two (uint8 levels) so a faster path that changes the network's input shows it.

    .venv/bin/python bench/gpu_decode.py --device cuda --threads 16 --batch 1 8 32 64 128
    .venv/bin/python bench/gpu_decode.py --device cpu --count 64 --batch 8   # smoke test

The service end to end (GPU decode on, the default on CUDA, and off), on one H100/H200:

    .venv/bin/python bench/load.py --checkpoint weights --device cuda --clients 8 \
        --concurrency 1 16 64 --duration 20
    VIRALIENCY_GPU_DECODE=false .venv/bin/python bench/load.py --checkpoint weights \
        --device cuda --clients 8 --concurrency 1 16 64 --duration 20
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.gpu_decode import prepare_jpegs
from app.images import Prepared, prepare
from bench.load import make_jpegs

MAX_PIXELS = 40_000_000


def cpu_rate(
    jpegs: list[bytes], threads: int, size: int, reps: int
) -> tuple[float, list[Prepared]]:
    """images/s of `prepare` on a pool of `threads` (median of reps), and its outputs."""
    with ThreadPoolExecutor(threads) as pool:
        outputs = list(pool.map(lambda d: prepare(d, "x", MAX_PIXELS, size), jpegs))
        times = []
        for _ in range(reps):
            started = time.perf_counter()
            list(pool.map(lambda d: prepare(d, "x", MAX_PIXELS, size), jpegs))
            times.append(time.perf_counter() - started)
    return len(jpegs) / statistics.median(times), outputs


def batched_rate(
    jpegs: list[bytes], batch: int, size: int, device: torch.device, reps: int
) -> tuple[float, list[Prepared]]:
    """images/s of `prepare_jpegs` in batches of `batch` on `device` (one thread)."""
    uploads = [(data, f"images[{k}]") for k, data in enumerate(jpegs)]

    def run() -> list[Prepared]:
        out = []
        for k in range(0, len(uploads), batch):
            out.extend(prepare_jpegs(uploads[k : k + batch], MAX_PIXELS, size, device))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        assert all(isinstance(p, Prepared) for p in out), "a benchmark JPEG failed to decode"
        return [p for p in out if isinstance(p, Prepared)]

    outputs = run()  # warm-up: nvJPEG handles, kernels
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return len(jpegs) / statistics.median(times), outputs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--count", type=int, default=512, help="distinct 640x480 JPEGs")
    parser.add_argument("--threads", type=int, default=16, help="CPU decoding threads")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32, 64, 128])
    parser.add_argument("--size", type=int, default=224, help="network input side")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    jpegs = make_jpegs(args.count)
    rate, reference = cpu_rate(jpegs, args.threads, args.size, args.reps)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"{len(jpegs)} JPEGs 640x480 -> {args.size}x{args.size}, device {name}")
    print("\n| decoder | batch | images/s | mean abs diff vs CPU (levels) |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| CPU prepare, {args.threads} threads | - | {rate:,.0f} | 0 |")
    for batch in args.batch:
        rate, outputs = batched_rate(jpegs, batch, args.size, device, args.reps)
        diff = np.mean(
            [np.abs(o.pixels.astype(int) - r.pixels.astype(int)).mean() for o, r in
             zip(outputs, reference, strict=True)]
        )  # fmt: skip
        print(f"| prepare_jpegs on {args.device} | {batch} | {rate:,.0f} | {diff:.2f} |")


if __name__ == "__main__":
    main()
