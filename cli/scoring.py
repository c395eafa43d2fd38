"""Scoring many files in-process: decode in worker threads, predict in batches, in order.

    paths --(thread pool, a bounded window ahead)--> Loaded --(batches)--> Engine.predict

Decoding runs ahead of the forward pass by at most two batches, so memory stays bounded
however large the folder, and the threads keep decoding while a batch is on the device.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from app.engine import Engine
from cli.images import BadImageError, Loaded, load
from cli.output import Row


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


def _loaded_in_order(
    paths: Sequence[str], engine: Engine, workers: int, ahead: int, max_pixels: int
) -> Iterator[Loaded | Skipped]:
    with ThreadPoolExecutor(workers, thread_name_prefix="decode") as pool:
        window: deque[tuple[str, Future[Loaded]]] = deque()
        pending = iter(paths)
        for path in pending:
            window.append((path, pool.submit(load, path, engine.input_size, max_pixels)))
            if len(window) >= ahead:
                break
        while window:
            path, future = window.popleft()
            next_path = next(pending, None)
            if next_path is not None:
                job = pool.submit(load, next_path, engine.input_size, max_pixels)
                window.append((next_path, job))
            try:
                yield future.result()
            except BadImageError as exc:
                yield Skipped(path, str(exc))


def score_files(
    engine: Engine,
    paths: Sequence[str],
    batch_size: int,
    workers: int,
    max_pixels: int,
    on_rows: Callable[[list[Row]], None],
    on_skip: Callable[[Skipped], None],
    platform: str | None = None,
) -> None:
    """Score `paths` in batches of at most `batch_size`; rows and skips are reported in order
    of the paths (a batch's rows together, after its forward pass). `platform` picks that
    platform's head of a checkpoint with one per platform."""
    batch: list[Loaded] = []

    def flush() -> None:
        predictions = engine.predict([item.prepared.pixels for item in batch])
        chosen = [p.choose(platform)[0] for p in predictions]
        on_rows(
            [
                Row(item.path, item.image_id, s, engine.percentile(s, platform))
                for item, s in zip(batch, chosen, strict=True)
            ]
        )
        batch.clear()

    for item in _loaded_in_order(paths, engine, workers, 2 * batch_size, max_pixels):
        if isinstance(item, Skipped):
            on_skip(item)
            continue
        batch.append(item)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
