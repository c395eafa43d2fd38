"""CPU-seconds per request in each of the server's processes, by photo size.

    .venv/bin/python -m bench.process_cpu --checkpoint weights --requests 8

Starts `python -m app` (the CPU defaults: the HTTP process decodes, a child process runs the
forward pass), sends bench/decode_size.py's requests of 8 photo-like JPEGs one at a time, and
reads each process's user + system time from /proc before and after, so the wall time per
request can be set against the CPU work it needed: on N cores, no layout can finish a request
in less than its total CPU-seconds / N. Linux only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
from pathlib import Path

import httpx

from bench.decode_size import SIZES, photo_jpeg, post
from bench.load import Server


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def children(pid: int) -> list[int]:
    tasks = Path(f"/proc/{pid}/task")
    found: list[int] = []
    for task in tasks.iterdir():
        found += [int(p) for p in (task / "children").read_text().split()]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("weights"))
    parser.add_argument("--requests", type=int, default=8, help="timed requests per size")
    args = parser.parse_args()
    settings = {
        "VIRALIENCY_CHECKPOINT": str(args.checkpoint.resolve()),
        "VIRALIENCY_DEVICE": "cpu",
        "VIRALIENCY_REQUEST_DEADLINE_S": "300",  # time what it costs, never a 504
    }
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(settings, Path(tmp) / "server.log")
        try:
            asyncio.run(server.wait_ready(300.0))
            pids = {"HTTP process": server.process.pid}
            pids |= {f"child {pid}": pid for pid in children(server.process.pid)}
            print(f"| photos | wall ms | {' | '.join(pids)} | total CPU-s |")
            print("| --- | ---: |" + " ---: |" * (len(pids) + 1))
            with httpx.Client(timeout=120.0) as client:
                for width, height in SIZES:
                    jpegs = [photo_jpeg(width, height, seed=s) for s in range(8)]
                    for _ in range(2):  # warm-up
                        post(client, server.url, jpegs)
                    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
                    walls = [post(client, server.url, jpegs) for _ in range(args.requests)]
                    after = {name: cpu_seconds(pid) for name, pid in pids.items()}
                    used = [(after[n] - before[n]) / args.requests for n in pids]
                    cells = " | ".join(f"{u:.3f}" for u in used)
                    wall = statistics.median(walls) * 1000
                    print(f"| 8 x {width}x{height} | {wall:.0f} | {cells} | {sum(used):.3f} |")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
