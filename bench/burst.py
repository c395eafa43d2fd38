"""Burst load for POST /score far past capacity: what is served, what is refused, how fast,
and the server's memory before and after.

Starts `python -m app` (127.0.0.1, a free port) with the given checkpoint and settings, then
sends `--waves` bursts of `--requests` concurrent /score requests of `--images` 640x480 JPEGs
each, one burst right after the other. Offered images/s = images sent / wall time of the
burst; served images/s = images answered 200 / the same time. Prints a markdown table.

    .venv/bin/python bench/burst.py --checkpoint weights --requests 128 --images 4 --waves 3
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.load import Server, make_jpegs

HEADER = (
    "| wave | requests x images | offered img/s | served img/s | 200 | 503 | other | "
    "503 p50 / p95 s | 200 p50 / p95 s | server RSS MiB after |\n"
    "|---:|---|---:|---:|---:|---:|---|---|---|---:|"
)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def one(
    client: httpx.AsyncClient, files: list[tuple[str, tuple[str, bytes]]]
) -> tuple[str, float]:
    started = time.monotonic()
    try:
        status = str((await client.post("/score", files=files)).status_code)
    except httpx.HTTPError as exc:
        status = type(exc).__name__
    return status, time.monotonic() - started


async def wave(
    url: str, requests: int, images: int, jpegs: list[bytes]
) -> tuple[list[tuple[str, float]], float]:
    limits = httpx.Limits(max_connections=requests, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=120.0, limits=limits) as client:
        bodies = [
            [("images", (f"{k}.jpg", jpegs[(i * images + k) % len(jpegs)])) for k in range(images)]
            for i in range(requests)
        ]
        started = time.monotonic()
        outcomes = await asyncio.gather(*(one(client, files) for files in bodies))
        return list(outcomes), time.monotonic() - started


def percentiles(values: list[float]) -> str:
    if not values:
        return "-"
    p50, p95 = np.percentile(values, [50, 95])
    return f"{p50:.2f} / {p95:.2f}"


async def bench(args: argparse.Namespace) -> str:
    jpegs = make_jpegs(16)
    settings = {
        "VIRALIENCY_CHECKPOINT": str(Path(args.checkpoint).resolve()),
        "VIRALIENCY_DEVICE": args.device,
        "VIRALIENCY_LOG_LEVEL": "warning",
        "VIRALIENCY_HEATMAP_STORE_MAX_ITEMS": "64",
    }
    if args.deadline:
        settings["VIRALIENCY_REQUEST_DEADLINE_S"] = str(args.deadline)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(settings, Path(tmp) / "server.log")
        try:
            await server.wait_ready(args.startup_timeout)
            rows.append(f"server RSS before: {rss_mib(server.process.pid):.0f} MiB")
            for number in range(1, args.waves + 1):
                outcomes, seconds = await wave(server.url, args.requests, args.images, jpegs)
                counts = Counter(status for status, _ in outcomes)
                other = {k: v for k, v in counts.items() if k not in ("200", "503")}
                offered = args.requests * args.images / seconds
                served = counts["200"] * args.images / seconds
                rows.append(
                    f"| {number} | {args.requests} x {args.images} | {offered:.1f} | "
                    f"{served:.1f} | {counts['200']} | {counts['503']} | {other or '-'} | "
                    f"{percentiles([s for c, s in outcomes if c == '503'])} | "
                    f"{percentiles([s for c, s in outcomes if c == '200'])} | "
                    f"{rss_mib(server.process.pid):.0f} |"
                )
                print(rows[-1], file=sys.stderr)
        finally:
            server.stop()
    return "\n".join([rows[0], "", HEADER, *rows[1:]])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", default="weights")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--requests", type=int, default=128, help="concurrent requests per wave")
    parser.add_argument("--images", type=int, default=4, help="images per request")
    parser.add_argument("--waves", type=int, default=3)
    parser.add_argument("--deadline", type=float, default=0.0, help="0: the server's default")
    parser.add_argument("--startup-timeout", type=float, default=300.0)
    args = parser.parse_args()
    print(asyncio.run(bench(args)))


if __name__ == "__main__":
    main()
