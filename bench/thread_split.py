"""Decode threads vs torch threads: our service's images/s for each split of the CPU cores.

Each configuration is `VIRALIENCY_TORCH_THREADS` (intra-op threads of the forward pass) and
`VIRALIENCY_DECODE_THREADS` (threads decoding uploads); every configuration is served and
driven at each concurrency (1 image per request, 640x480 JPEGs, bench/load.py's generator),
in rounds whose order alternates, so machine noise spreads over all of them.

    .venv/bin/python bench/thread_split.py --checkpoint weights --duration 8 \
        --split 2,2 1,1 1,2 2,1
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.litserve_compare import load_average
from bench.load import Level, Server, make_jpegs, run_level


async def serve_and_drive(
    args: argparse.Namespace, torch_threads: int, decode_threads: int, log: Path
) -> list[Level]:
    settings = {
        "VIRALIENCY_CHECKPOINT": str(Path(args.checkpoint).resolve()),
        "VIRALIENCY_DEVICE": "cpu",
        "VIRALIENCY_TORCH_THREADS": str(torch_threads),
        "VIRALIENCY_DECODE_THREADS": str(decode_threads),
    }
    if decode_threads == 1:
        settings["VIRALIENCY_MAX_CONCURRENT_RENDERS"] = "1"
    server = Server(settings, log)
    levels = []
    try:
        await server.wait_ready(args.startup_timeout)
        for concurrency in args.concurrency:
            name = f"torch {torch_threads} / decode {decode_threads}"
            level = await run_level(server.url, name, concurrency, jpegs_cache, args.duration, 0, 1)
            print(level.row(), file=sys.stderr, flush=True)
            levels.append(level)
    finally:
        server.stop()
    return levels


jpegs_cache: list[bytes] = []


async def main_async(args: argparse.Namespace) -> str:
    jpegs_cache.extend(make_jpegs(32))
    splits = [tuple(int(v) for v in s.split(",")) for s in args.split]
    runs: dict[tuple[int, ...], list[list[Level]]] = {s: [] for s in splits}
    loads = [load_average()]
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            order = splits if round_ % 2 == 0 else splits[::-1]
            for split in order:
                log = Path(tmp) / f"{split}-{round_}.log"
                runs[split].append(await serve_and_drive(args, split[0], split[1], log))
            loads.append(load_average())
    lines = [
        f"load average (1/5/15 min) before and after each round: {' -> '.join(loads)}",
        "",
        "| torch threads | decode threads | "
        + " | ".join(f"c={c} images/s" for c in args.concurrency)
        + " | c=1 p50 ms |",
        "| ---: | ---: |" + " ---: |" * (len(args.concurrency) + 1),
    ]
    for split, rounds in runs.items():
        rates = [
            statistics.mean(r[k].images / r[k].seconds for r in rounds)
            for k in range(len(args.concurrency))
        ]
        p50 = statistics.mean(float(np.median(r[0].latencies_ms)) for r in rounds)
        cells = " | ".join(f"{v:.1f}" for v in rates)
        lines.append(f"| {split[0]} | {split[1]} | {cells} | {p50:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", default="weights")
    parser.add_argument("--split", nargs="+", default=["2,2", "1,1", "1,2", "2,1"])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--startup-timeout", type=float, default=180.0)
    print(asyncio.run(main_async(parser.parse_args())))


if __name__ == "__main__":
    main()
