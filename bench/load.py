"""Load test for POST /score: images/s and latency percentiles, batching on vs max_batch_size=1.

Starts the service itself (`python -m app` on 127.0.0.1, a free port) once per configuration,
posts generated 640x480 JPEGs from async httpx clients at each concurrency level for a fixed
time, stops the server, and prints a markdown table. Only ever talks to 127.0.0.1.

One Python process tops out at a few thousand small requests/s of its own (multipart encoding
and HTTP parsing hold the GIL), so `--clients N` spreads each level's concurrent requests over
N client processes started together, and merges their latencies.

    .venv/bin/python bench/load.py --checkpoint weights --duration 10 --clients 4
    .venv/bin/python bench/load.py --checkpoint /tmp/tiny --duration 3 --output bench/out.md
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"


@dataclass
class Level:
    mode: str
    concurrency: int
    requests: int
    images: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    mean_batch: float

    def row(self) -> str:
        p50, p95, p99 = (
            np.percentile(self.latencies_ms, [50, 95, 99]) if self.latencies_ms else [0] * 3
        )
        rate = self.images / self.seconds if self.seconds else 0.0
        return (
            f"| {self.mode} | {self.concurrency} | {self.requests} | {rate:,.0f} | "
            f"{p50:.1f} | {p95:.1f} | {p99:.1f} | {self.mean_batch:.1f} | {self.errors} |"
        )


HEADER = (
    "| batching | concurrency | requests | images/s | p50 ms | p95 ms | p99 ms | mean batch "
    "| errors |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def make_jpegs(count: int, width: int = 640, height: int = 480, seed: int = 0) -> list[bytes]:
    """Noise plus a few shapes, JPEG quality 90: realistic sizes (~100-200 kB) and decode cost."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        bgr = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (5, 5), 0)
        for _ in range(6):
            centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            cv2.circle(bgr, centre, int(rng.integers(20, 150)), colour, -1)
            corner = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            cv2.rectangle(bgr, corner, (corner[0] + 120, corner[1] + 80), colour[::-1], 4)
        ok, buffer = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        images.append(buffer.tobytes())
    return images


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """`python -m app` in a subprocess, configured through VIRALIENCY_* variables; `root` is
    the checkout it runs from (another worktree serves an earlier version side by side)."""

    def __init__(self, settings: dict[str, str], log_path: Path, root: Path = ROOT) -> None:
        self.port = free_port()
        env = {**os.environ, **settings}
        env.update({"VIRALIENCY_HOST": HOST, "VIRALIENCY_PORT": str(self.port)})
        self._start([sys.executable, "-m", "app"], root, env, log_path)
        self.url = f"http://{HOST}:{self.port}"
        self.ready_path = "/readyz"

    def _start(self, command: list[str], cwd: Path, env: dict[str, str], log_path: Path) -> None:
        """Run `command` in its own session, so that `stop` reaches every process it spawns
        (LitServe's HTTP server and inference worker outlived a SIGTERM to their parent and
        kept spinning through later runs)."""
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=self._log, stderr=self._log, start_new_session=True
        )

    async def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=self.url) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    break
                try:
                    if (await client.get(self.ready_path)).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)
        exited = self.process.poll()
        self.stop()
        tail = self.log_path.read_text(errors="replace")[-3000:]
        why = f"exited with {exited}" if exited is not None else f"was not ready in {timeout} s"
        raise RuntimeError(f"the server {why}; its log ends:\n{tail}")

    def stop(self) -> None:
        """SIGTERM to the server's whole process group, then SIGKILL to what is left."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self._log.close()


async def batch_stats(client: httpx.AsyncClient) -> tuple[float, float]:
    response = await client.get("/metrics")
    if response.status_code != 200:  # a peer server without our metrics (bench/litserve_compare)
        return 0.0, 0.0
    text = response.text
    values = {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name in ("viraliency_batch_size_count", "viraliency_batch_size_sum")
    }
    return values.get("viraliency_batch_size_count", 0.0), values.get(
        "viraliency_batch_size_sum", 0.0
    )


Driven = tuple[list[float], int, float, float]  # latencies (ms), errors, began, ended


async def drive(
    url: str,
    concurrency: int,
    jpegs: list[bytes],
    stop_at: float,
    max_requests: int,
    honour_retry_after: bool = True,
) -> Driven:
    """`concurrency` requests in flight until `stop_at` (time.time()): latencies, errors, and
    the wall-clock window they were measured in (after warming up). A client refused with 503
    waits its `Retry-After` (within the window) before its next request, as an HTTP client
    should; a generator that retried at once would measure how fast a server can refuse
    (`honour_retry_after=False` does, to measure a retry storm)."""
    limits = httpx.Limits(
        max_connections=concurrency + 1, max_keepalive_connections=concurrency + 1
    )
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60.0) as client:
        for data in jpegs[:2]:  # warm connections and caches
            await client.post("/score", files=[("images", ("w.jpg", data, "image/jpeg"))])
        latencies: list[float] = []
        errors = 0
        issued = 0

        async def worker(offset: int) -> None:
            nonlocal errors, issued
            i = offset
            while time.time() < stop_at and (max_requests <= 0 or issued < max_requests):
                issued += 1
                data = jpegs[i % len(jpegs)]
                i += concurrency
                started = time.perf_counter()
                retry_after = 0.0
                try:
                    response = await client.post(
                        "/score", files=[("images", ("bench.jpg", data, "image/jpeg"))]
                    )
                    ok = response.status_code == 200
                    if response.status_code == 503 and honour_retry_after:
                        retry_after = float(response.headers.get("Retry-After", 0) or 0)
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append((time.perf_counter() - started) * 1000.0)
                else:
                    errors += 1
                if retry_after > 0:
                    await asyncio.sleep(min(retry_after, max(0.0, stop_at - time.time())))

        began = time.time()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return latencies, errors, began, time.time()


def drive_in_process(*args: Any) -> Driven:
    """`drive(*args)` in a client process of its own (run_level's process pool)."""
    return asyncio.run(drive(*args))


def split(total: int, parts: int) -> list[int]:
    """total requests in flight over at most `parts` clients, as evenly as possible."""
    parts = max(1, min(parts, total))
    return [total // parts + (1 if k < total % parts else 0) for k in range(parts)]


async def run_level(
    url: str,
    mode: str,
    concurrency: int,
    jpegs: list[bytes],
    duration: float,
    max_requests: int,
    clients: int,
    honour_retry_after: bool = True,
) -> Level:
    async with httpx.AsyncClient(base_url=url) as client:
        count0, sum0 = await batch_stats(client)
    if max_requests > 0:
        clients = min(clients, max_requests)  # every client process gets a cap of at least 1
    shares = split(concurrency, clients)
    caps = split(max_requests, len(shares)) if max_requests > 0 else [0] * len(shares)
    if len(shares) == 1:
        stop_at = time.time() + duration
        results = [await drive(url, concurrency, jpegs, stop_at, max_requests, honour_retry_after)]
    else:
        stop_at = time.time() + duration + 2.0  # client processes need a moment to start
        context = multiprocessing.get_context("spawn")
        loop = asyncio.get_running_loop()
        with ProcessPoolExecutor(len(shares), mp_context=context) as pool:
            results = await asyncio.gather(
                *(
                    loop.run_in_executor(
                        pool,
                        drive_in_process,
                        url,
                        n,
                        jpegs,
                        stop_at,
                        cap,
                        honour_retry_after,
                    )
                    for n, cap in zip(shares, caps, strict=True)
                )
            )
    latencies = [ms for part, _, _, _ in results for ms in part]
    errors = sum(result[1] for result in results)
    elapsed = max(r[3] for r in results) - min(r[2] for r in results)
    async with httpx.AsyncClient(base_url=url) as client:
        count1, sum1 = await batch_stats(client)
    mean_batch = (sum1 - sum0) / (count1 - count0) if count1 > count0 else 0.0
    return Level(mode, concurrency, len(latencies) + errors, len(latencies), errors, elapsed,
                 latencies, mean_batch)  # fmt: skip


async def bench(args: argparse.Namespace) -> list[Level]:
    jpegs = make_jpegs(args.images)
    print(
        f"{len(jpegs)} JPEGs 640x480, mean {np.mean([len(j) for j in jpegs]) / 1024:.0f} kB",
        file=sys.stderr,
    )
    configs = [("on", args.max_batch_size), ("off (max_batch_size=1)", 1)]
    levels: list[Level] = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode, batch_size in configs:
            settings = {
                "VIRALIENCY_CHECKPOINT": str(Path(args.checkpoint).resolve()),
                "VIRALIENCY_DEVICE": args.device,
                "VIRALIENCY_MAX_BATCH_SIZE": str(batch_size),
                "VIRALIENCY_MAX_WAIT_MS": str(args.max_wait_ms),
                "VIRALIENCY_MAX_QUEUED_IMAGES": str(max(args.concurrency) * 4),
                "VIRALIENCY_MAX_IMAGES_PER_REQUEST": "1",  # must not exceed the queue bound
                "VIRALIENCY_LOG_LEVEL": "warning",
            }
            if args.close_when_idle is not None:
                settings["VIRALIENCY_BATCH_CLOSE_WHEN_IDLE"] = str(args.close_when_idle).lower()
            if args.decode_threads:
                settings["VIRALIENCY_DECODE_THREADS"] = str(args.decode_threads)
            server = Server(settings, Path(tmp) / f"server-{batch_size}.log")
            try:
                await server.wait_ready(args.startup_timeout)
                for concurrency in args.concurrency:
                    level = await run_level(
                        server.url,
                        mode,
                        concurrency,
                        jpegs,
                        args.duration,
                        args.requests,
                        args.clients,
                    )
                    print(level.row(), file=sys.stderr)
                    levels.append(level)
            finally:
                server.stop()
    return levels


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--checkpoint", default="weights", help="checkpoint folder (default: weights)"
    )
    parser.add_argument("--device", default="auto", help="VIRALIENCY_DEVICE for the server")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per level")
    parser.add_argument(
        "--requests", type=int, default=0, help="cap on requests per level (0: none)"
    )
    parser.add_argument(
        "--clients",
        type=int,
        default=1,
        help="client processes sharing each level's concurrency (default 1: this process)",
    )
    parser.add_argument("--max-batch-size", type=int, default=64, help="for the batching-on run")
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    parser.add_argument(
        "--close-when-idle",
        action=argparse.BooleanOptionalAction,
        help="VIRALIENCY_BATCH_CLOSE_WHEN_IDLE (default: the server's, true)",
    )
    parser.add_argument("--decode-threads", type=int, default=0, help="0: the server's default")
    parser.add_argument("--images", type=int, default=32, help="distinct JPEGs to cycle through")
    parser.add_argument("--startup-timeout", type=float, default=120.0)
    parser.add_argument("--output", type=Path, help="also write the markdown table to this file")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    levels = asyncio.run(bench(args))
    table = "\n".join([HEADER, *(level.row() for level in levels)])
    print(table)
    if args.output:
        args.output.write_text(table + "\n")


if __name__ == "__main__":
    main()
