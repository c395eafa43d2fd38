"""Decode cost by photo size on servers that differ by environment settings, interleaved.

    python -m bench.decode_size_variants --checkpoint weights --rounds 8 \
        --variant VIRALIENCY_CPU_YIELD_TO_DECODING=false --variant VIRALIENCY_TORCH_THREADS=1

Like bench/decode_size.py (8 JPEGs per POST /score, one request at a time, sizes and servers
interleaved round by round, the servers' order rotating, the first round a warm-up), but every
server decodes as shipped; the first runs the defaults, each `--variant NAME=VALUE[,NAME=VALUE]`
one more server, and `--baseline-root DIR` one more that runs the defaults from another checkout
(e.g. `git worktree add /tmp/before HEAD~1`), to measure a change side by side.
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

import httpx

from bench.decode_size import SIZES, Server, photo_jpeg, post
from bench.load import ROOT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "weights")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--variant", action="append", default=[])
    parser.add_argument("--baseline-root", type=Path, help="another checkout, run as shipped")
    args = parser.parse_args()
    variants = {"defaults": {}} | {
        v: dict(pair.split("=", 1) for pair in v.split(",")) for v in args.variant
    }
    servers = {}
    for name, env in variants.items():
        saved = dict(os.environ)
        os.environ.update(env)  # the server's subprocess inherits them
        servers[name] = Server(
            args.checkpoint, 2, Path(f"/tmp/decode_size_variants-{len(servers)}.log")
        )
        os.environ.clear()
        os.environ.update(saved)
    if args.baseline_root:
        log = Path(f"/tmp/decode_size_variants-{len(servers)}.log")
        servers["baseline"] = Server(
            args.checkpoint.resolve(), 2, log, args.baseline_root.resolve()
        )
    times: dict[tuple[str, tuple[int, int]], list[float]] = {}
    try:
        photos = {size: [photo_jpeg(*size, seed=s) for s in range(8)] for size in SIZES}
        for server in servers.values():
            server.wait_ready()
        with httpx.Client(timeout=120.0) as client:
            names = list(servers)
            for r in range(args.rounds + 1):
                # Whoever follows a forward pass shares the cores with its threads' spin-wait
                # (bench/request_overhead.py): the order of the servers rotates between rounds.
                order = names[r % len(names) :] + names[: r % len(names)]
                for size, jpegs in photos.items():
                    for name in order:
                        seconds = post(client, servers[name].url, jpegs)
                        if r:
                            times.setdefault((name, size), []).append(seconds)
    finally:
        for server in servers.values():
            server.stop()
    print("| server | " + " | ".join(f"{w}x{h}" for w, h in SIZES) + " |")
    print("|---|" + "---:|" * len(SIZES))
    for name in servers:
        medians = [statistics.median(times[(name, size)]) for size in SIZES]
        cells = [f"{m * 1000:.0f} ({m / medians[0]:.2f}x)" for m in medians]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
