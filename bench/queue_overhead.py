"""What the worker queue adds to one lone request: decode + forward alone vs through the Service.

Issue 4's target: at concurrency 1, the queue adds at most 2 ms to the latency of decode +
forward. This measures exactly that, in one process and without HTTP, side by side:

  direct   prepare(jpeg) then engine.predict([pixels]), on the calling thread
  service  Service.reserve(1) + Admission.score([upload]): the decode pool, the batcher's queue
           and worker thread, the futures back to asyncio (what every route goes through)

once with VIRALIENCY_BATCH_CLOSE_WHEN_IDLE=false (a batch waits up to max_wait_ms for company)
and once with the default, true (it closes as soon as nothing else is admitted). The two paths
alternate request by request, so drift in the machine affects both alike.

    .venv/bin/python bench/queue_overhead.py --checkpoint weights --device cpu --requests 200
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.images import prepare
from app.metrics import Metrics
from app.service import Admission, Service, Upload
from app.settings import Settings
from bench.load import make_jpegs


async def measure(settings: Settings, jpegs: list[bytes], requests: int) -> dict[str, list[float]]:
    """Milliseconds per request for each path, alternating, after a few warm-up rounds."""
    service = await Service.start(settings, Metrics())
    engine = service.engine
    times: dict[str, list[float]] = {"direct": [], "service": []}
    try:
        for i in range(requests + 5):
            data = jpegs[i % len(jpegs)]
            started = time.perf_counter()
            engine.predict([prepare(data, "bench", settings.max_pixels, engine.input_size).pixels])
            direct = time.perf_counter() - started
            started = time.perf_counter()
            with service.reserve(1) as reservation:
                admission = Admission(service, reservation)
                await admission.score([Upload("bench", data)], keep=False)
            through = time.perf_counter() - started
            if i >= 5:
                times["direct"].append(1000 * direct)
                times["service"].append(1000 * through)
    finally:
        await service.stop()
    return times


def row(label: str, times: dict[str, list[float]]) -> str:
    direct, service = np.median(times["direct"]), np.median(times["service"])
    p95 = np.percentile(np.subtract(times["service"], times["direct"]), 95)
    return (
        f"| {label} | {direct:.2f} | {service:.2f} | {service - direct:+.2f} | {p95:+.2f} | "
        f"{service / direct:.3f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("weights"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    args = parser.parse_args()
    jpegs = make_jpegs(8)
    print(
        "| batch closing | direct median ms | through the queue median ms | added (median) | "
        "added (p95) | ratio |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for label, close_when_idle in (
        (f"after max_wait_ms ({args.max_wait_ms:g} ms)", False),
        ("when idle", True),
    ):
        settings = Settings(
            checkpoint=args.checkpoint,
            device=args.device,
            max_wait_ms=args.max_wait_ms,
            batch_close_when_idle=close_when_idle,
        )
        times = asyncio.run(measure(settings, jpegs, args.requests))
        print(row(label, times), flush=True)


if __name__ == "__main__":
    main()
