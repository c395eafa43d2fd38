"""Per-request overhead against a peer: our service vs LitServe on the same model, side by side.

Both servers score the same checkpoint on the CPU with the same decode + squash
(`app.images.prepare`) and the same `Engine.predict`:

- **ours**: `python -m app` with its defaults (max batch 64, 2 ms wait), all its extra work on
  (SHA-256 ids, heatmap store, metrics, percentile, structured logs at `info`);
- **LitServe**: a `LitAPI` (max batch 64, `batch_timeout` 2 ms, one CPU inference worker, one
  HTTP server: LitServe's defaults) at the same path `/score`, field `images`.

Each round starts one server, drives it at every concurrency (1 image per request, 640x480
JPEGs, `bench/load.py`'s generator), stops it, then does the same for the other; the order
alternates between rounds (ours first, then LitServe first, ...). The table gives each
server's images/s and median latency per round and the ratio of the means. Before the rounds
it times decode + forward in this process (no HTTP, no queue) for the latency target.

LitServe is a bench-only dependency: `pip install -e '.[bench]'` (or the pins of the `bench`
extra in pyproject.toml). Only ever talks to 127.0.0.1.

    .venv/bin/python bench/litserve_compare.py --checkpoint weights --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # app, model, bench.load

from bench.load import HOST, Level, Server, free_port, make_jpegs, run_level

ROOT = Path(__file__).resolve().parents[1]
MAX_PIXELS = 40_000_000  # the service's default VIRALIENCY_MAX_PIXELS


class LitServeServer(Server):
    """This script's `--serve-litserve` mode in a subprocess; /health is its readiness probe."""

    def __init__(self, args: argparse.Namespace, log_path: Path) -> None:
        self.port = free_port()
        command = [
            sys.executable,
            __file__,
            "--serve-litserve",
            str(self.port),
            "--checkpoint",
            str(Path(args.checkpoint).resolve()),
            "--max-batch-size",
            str(args.max_batch_size),
            "--max-wait-ms",
            str(args.max_wait_ms),
        ]
        self._start(command, ROOT, dict(os.environ), log_path)
        self.url = f"http://{HOST}:{self.port}"
        self.ready_path = "/health"


def ours(args: argparse.Namespace, log_path: Path, extra: list[str] | None = None) -> Server:
    """Our service with the script's settings, then --env, then `extra` (a variant's)."""
    settings = {
        "VIRALIENCY_CHECKPOINT": str(Path(args.checkpoint).resolve()),
        "VIRALIENCY_DEVICE": "cpu",
        "VIRALIENCY_MAX_BATCH_SIZE": str(args.max_batch_size),
        "VIRALIENCY_MAX_WAIT_MS": str(args.max_wait_ms),
        "VIRALIENCY_LOG_LEVEL": args.log_level,
    }
    for pair in [*args.env, *(extra or [])]:
        key, _, value = pair.partition("=")
        settings[key] = value
    return Server(settings, log_path, args.ours_root.resolve())


def in_process_ms(checkpoint: Path, jpegs: list[bytes], reps: int) -> float:
    """Median decode + squash + Engine.predict of one upload, in this process."""
    from app.engine import Engine
    from app.images import prepare
    from app.settings import Settings

    engine = Engine.from_settings(Settings(checkpoint=checkpoint, device="cpu"))
    engine.warm_up(1)
    times = []
    for k in range(reps):
        started = time.perf_counter()
        prepared = prepare(jpegs[k % len(jpegs)], "x", MAX_PIXELS, engine.input_size)
        engine.predict([prepared.pixels])
        times.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(times)


async def one_run(
    server: Server, name: str, args: argparse.Namespace, jpegs: list[bytes]
) -> list[Level]:
    levels = []
    try:
        await server.wait_ready(args.startup_timeout)
        for concurrency in args.concurrency:
            level = await run_level(
                server.url,
                name,
                concurrency,
                jpegs,
                args.duration,
                0,
                args.clients,
                honour_retry_after=not args.ignore_retry_after,
            )
            print(level.row(), file=sys.stderr, flush=True)
            levels.append(level)
    finally:
        server.stop()
    return levels


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


async def compare(args: argparse.Namespace) -> str:
    jpegs = make_jpegs(args.images)
    direct = in_process_ms(Path(args.checkpoint), jpegs, args.direct_reps)
    print(f"in-process decode + forward, median: {direct:.1f} ms", file=sys.stderr)
    names = ["ours", *(["variant"] if args.variant else []), "litserve"]
    results: dict[str, list[list[Level]]] = {name: [] for name in names}
    loads = [load_average()]
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            order = names if round_ % 2 == 0 else names[::-1]
            for name in order:
                log = Path(tmp) / f"{name}-{round_}.log"
                if name == "litserve":
                    server: Server = LitServeServer(args, log)
                else:
                    server = ours(args, log, args.variant if name == "variant" else None)
                results[name].append(await one_run(server, name, args, jpegs))
                loads.append(load_average())
    return table(args, results, direct, loads)


def show(values: list[float], digits: int = 0) -> str:
    return " / ".join(f"{v:.{digits}f}" for v in values)


def table(
    args: argparse.Namespace, results: dict[str, list[list[Level]]], direct: float, loads: list[str]
) -> str:
    ours_names = [n for n in results if n != "litserve"]
    label = {"ours": "ours", "variant": f"ours with {' '.join(args.variant or [])}"}
    lines = [
        f"in-process decode + forward (median of {args.direct_reps}): {direct:.1f} ms; "
        f"load average (1/5/15 min) before and after each server run: {' -> '.join(loads)}",
        "",
        "| server | concurrency | images/s (per round) | LitServe images/s (per round) | ratio | "
        "p50 ms | LitServe p50 ms | failed |",
        "| --- | ---: | --- | --- | ---: | --- | --- | ---: |",
    ]
    for k, concurrency in enumerate(args.concurrency):
        rates = {n: [r[k].images / r[k].seconds for r in runs] for n, runs in results.items()}
        p50 = {
            n: [float(np.median(r[k].latencies_ms)) if r[k].latencies_ms else 0.0 for r in runs]
            for n, runs in results.items()
        }
        peer = statistics.mean(rates["litserve"])
        for name in ours_names:
            ratio = f"{statistics.mean(rates[name]) / peer:.2f}" if peer > 0 else "n/a"
            failed = sum(run[k].errors for run in results[name])
            lines.append(
                f"| {label[name]} | {concurrency} | {show(rates[name], 1)} | "
                f"{show(rates['litserve'], 1)} | {ratio} | {show(p50[name], 1)} | "
                f"{show(p50['litserve'], 1)} | {failed} |"
            )
    errors = sum(level.errors for runs in results.values() for run in runs for level in run)
    lines.append(f"\nfailed requests: {errors}")
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", default="weights")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per level")
    parser.add_argument("--rounds", type=int, default=2, help="each server once per round")
    parser.add_argument("--clients", type=int, default=1, help="load client processes")
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    parser.add_argument("--log-level", default="info", help="our VIRALIENCY_LOG_LEVEL")
    parser.add_argument(
        "--env", nargs="*", default=[], help="more VIRALIENCY_X=value settings for our server"
    )
    parser.add_argument(
        "--variant",
        nargs="+",
        metavar="VIRALIENCY_X=value",
        help="also serve ours with these settings (after --env), in the same rounds, with "
        "its own ratio: a layout or setting against today's default, side by side",
    )
    parser.add_argument(
        "--ignore-retry-after",
        action="store_true",
        help="clients resend at once after a 503 instead of waiting its Retry-After",
    )
    parser.add_argument("--images", type=int, default=32, help="distinct JPEGs to cycle through")
    parser.add_argument("--direct-reps", type=int, default=100)
    parser.add_argument("--startup-timeout", type=float, default=180.0)
    parser.add_argument(
        "--ours-root",
        type=Path,
        default=ROOT,
        help="checkout to serve ours from (default: this one; e.g. a worktree of the commit "
        "before, for a before/after table)",
    )
    parser.add_argument("--output", type=Path, help="also write the table to this file")
    parser.add_argument("--serve-litserve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.serve_litserve:
        from bench.litserve_api import serve  # bench-only dependency: only in this mode

        serve(
            Path(args.checkpoint), HOST, args.serve_litserve, args.max_batch_size, args.max_wait_ms
        )
        return
    result = asyncio.run(compare(args))
    print(result)
    if args.output:
        args.output.write_text(result + "\n")


if __name__ == "__main__":
    main()
