"""What one request costs on top of the model: latency at concurrency 1, paired with in-process.

Issue 15's target: the median latency at concurrency 1 within 3 ms of decode + forward done in
the caller's process. Separate runs of the two swing by more than that on a shared 2-core
machine (medians of 47-60 ms for the same server in one afternoon), so this script interleaves
them: every round does one in-process `app.images.prepare` + `Engine.predict` of a JPEG and
one `/score` request of the same JPEG to each running server, in an order that rotates between
rounds (whatever runs right after a forward pass shares the cores with its OpenMP threads'
spin-wait, so a fixed order would favour some), and reports each server's median and the
median of its per-round difference from the in-process time of the same round.

Servers, all started before the rounds and idle between their requests:
- `ours`: `python -m app` from this checkout with its defaults (all its extra work on);
- `baseline` (`--baseline-root DIR`): the same from another checkout, e.g. a `git worktree`
  of an earlier commit, to measure a change side by side;
- `litserve` (`--litserve`): bench/litserve_compare.py's LitServe server on the same model.

    .venv/bin/python bench/request_overhead.py --checkpoint weights --rounds 200 --litserve
    git worktree add /tmp/before f3dbd0e
    .venv/bin/python bench/request_overhead.py --checkpoint weights --baseline-root /tmp/before
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # app, model, bench

from bench.litserve_compare import MAX_PIXELS, LitServeServer, load_average
from bench.load import Server, make_jpegs


def start_servers(args: argparse.Namespace, folder: Path) -> dict[str, Server]:
    settings = {
        "VIRALIENCY_CHECKPOINT": str(Path(args.checkpoint).resolve()),
        "VIRALIENCY_DEVICE": "cpu",
    }
    for pair in args.env:
        key, _, value = pair.partition("=")
        settings[key] = value
    servers: dict[str, Server] = {"ours": Server(settings, folder / "ours.log")}
    if args.baseline_root:
        servers["baseline"] = Server(settings, folder / "baseline.log", args.baseline_root)
    if args.litserve:
        lit = argparse.Namespace(checkpoint=args.checkpoint, max_batch_size=64, max_wait_ms=2)
        servers["litserve"] = LitServeServer(lit, folder / "litserve.log")
    return servers


def measure(args: argparse.Namespace, servers: dict[str, Server]) -> dict[str, list[float]]:
    """Per round: in-process and each server once, in an order that rotates between rounds."""
    from app.engine import Engine
    from app.images import prepare
    from app.settings import Settings

    engine = Engine.from_settings(Settings(checkpoint=Path(args.checkpoint), device="cpu"))
    engine.warm_up(1)
    jpegs = make_jpegs(8)
    names = ["in-process", *servers]
    times: dict[str, list[float]] = {name: [] for name in names}
    clients = {name: httpx.Client(base_url=server.url) for name, server in servers.items()}
    try:
        for round_ in range(args.warmup + args.rounds):
            jpeg = jpegs[round_ % len(jpegs)]
            samples = {}
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                started = time.perf_counter()
                if name == "in-process":
                    engine.predict([prepare(jpeg, "x", MAX_PIXELS, engine.input_size).pixels])
                else:
                    response = clients[name].post(
                        "/score", files={"images": ("photo.jpg", jpeg, "image/jpeg")}
                    )
                    if response.status_code != 200:
                        raise RuntimeError(f"{name}: {response.status_code} {response.text[:300]}")
                samples[name] = time.perf_counter() - started
            if round_ >= args.warmup:
                for name, seconds in samples.items():
                    times[name].append(seconds * 1000.0)
    finally:
        for client in clients.values():
            client.close()
    return times


def table(times: dict[str, list[float]]) -> str:
    direct = times["in-process"]
    lines = [
        "| | median ms | p90 ms | median paired difference from in-process, ms |",
        "|---|---|---|---|",
    ]
    for name, values in times.items():
        quantiles = statistics.quantiles(values, n=10)
        if name == "in-process":
            difference = "-"
        else:
            paired = [v - d for v, d in zip(values, direct, strict=True)]
            difference = f"{statistics.median(paired):.1f}"
        median = statistics.median(values)
        lines.append(f"| {name} | {median:.1f} | {quantiles[-1]:.1f} | {difference} |")
    return "\n".join(lines)


async def wait_all(servers: dict[str, Server], timeout: float) -> None:
    await asyncio.gather(*(server.wait_ready(timeout) for server in servers.values()))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="weights")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10, help="rounds not counted")
    parser.add_argument("--baseline-root", type=Path, help="another checkout to serve too")
    parser.add_argument("--litserve", action="store_true", help="serve with LitServe too")
    parser.add_argument(
        "--env", action="append", default=[], metavar="KEY=VALUE", help="for our servers"
    )
    parser.add_argument("--startup-timeout", type=float, default=300.0)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    load_before = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        servers = start_servers(args, Path(tmp))
        try:
            asyncio.run(wait_all(servers, args.startup_timeout))
            times = measure(args, servers)
        finally:
            for server in servers.values():
                server.stop()
    print(f"{args.rounds} rounds, 1 640x480 JPEG per request; load average {load_before} before,")
    print(f"{load_average()} after\n")
    print(table(times))


if __name__ == "__main__":
    main()
