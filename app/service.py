"""The scoring pipeline behind every route: decode -> batch -> predict -> unbatch -> keep.

    uploads --(thread pool)--> Prepared --(Batcher, one worker thread)--> Prediction

`Service` owns the engine, the batcher, the decoding pool and the heatmap store; the lifespan
starts it (load, warm up) and stops it (refuse new work, finish what was admitted).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from app.batching import Batcher, QueueFullError, Reservation, ShuttingDownError
from app.engine import Engine, Prediction, ViraliencyMap
from app.errors import ApiError
from app.images import Prepared, prepare
from app.metrics import Metrics
from app.settings import Settings
from app.store import HeatmapStore, StoredImage

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class Upload:
    label: str  # how error messages name it, e.g. "images[1] ('cat.jpg')"
    data: bytes


@dataclass(frozen=True)
class Scored:
    image_id: str  # hex SHA-256 of the upload
    score: float
    percentile: float | None
    width: int
    height: int
    viraliency: ViraliencyMap


def _prepare_upload(upload: Upload, max_pixels: int, size: int) -> tuple[str, Prepared]:
    return hashlib.sha256(upload.data).hexdigest(), prepare(
        upload.data, upload.label, max_pixels, size
    )


class Service:
    def __init__(self, settings: Settings, engine: Engine, metrics: Metrics) -> None:
        self.settings = settings
        self.engine = engine
        self.metrics = metrics
        self.batcher: Batcher[Prepared, Prediction] = Batcher(
            self._predict,
            max_batch_size=settings.max_batch_size,
            max_wait_s=settings.max_wait_ms / 1000.0,
            max_pending=settings.max_queued_images,
            on_batch=metrics.batch_size.observe,
            name=f"batcher-{engine.device}",
            close_when_idle=settings.batch_close_when_idle,
        )
        self.decoder = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="decode")
        self.store = HeatmapStore(
            settings.heatmap_store_max_items,
            settings.heatmap_store_max_bytes,
            settings.heatmap_ttl_s,
        )
        self.ready = False
        metrics.queue_depth.set_function(lambda: self.batcher.pending)
        metrics.heatmap_store_items.set_function(lambda: len(self.store))
        metrics.heatmap_store_bytes.set_function(lambda: self.store.nbytes)

    @classmethod
    async def start(cls, settings: Settings, metrics: Metrics) -> Service:
        """Load the checkpoint and warm it up, off the event loop; then admit requests."""
        engine = await asyncio.to_thread(Engine.load, settings.checkpoint, settings.device)
        await asyncio.to_thread(engine.warm_up, settings.max_batch_size)
        service = cls(settings, engine, metrics)
        service.batcher.start()
        service.ready = True
        return service

    async def stop(self) -> None:
        """Refuse new work, finish every admitted image, then stop the worker threads."""
        self.ready = False
        self.batcher.close()
        log.info("draining", extra={"event": "draining", "pending": self.batcher.pending})
        drained = await asyncio.to_thread(self.batcher.stop, self.settings.shutdown_timeout_s)
        await asyncio.to_thread(self.decoder.shutdown, wait=True, cancel_futures=True)
        log.info("stopped", extra={"event": "stopped", "drained": drained})

    def _predict(self, prepared: list[Prepared]) -> list[Prediction]:
        return self.engine.predict([p.pixels for p in prepared])

    async def in_pool(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run blocking work (decoding, rendering, encoding) on the decoding threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.decoder, lambda: fn(*args, **kwargs))

    def _reserve(self, count: int) -> Reservation[Prepared, Prediction]:
        retry = {"Retry-After": str(self.settings.retry_after_s)}
        try:
            return self.batcher.reserve(count)
        except QueueFullError as exc:
            raise ApiError(
                503, "queue_full", f"overloaded: {exc}; retry later", headers=retry
            ) from None
        except ShuttingDownError:
            message = "the service is shutting down; retry on another instance"
            raise ApiError(503, "shutting_down", message, headers=retry) from None

    async def _prepare_all(
        self, uploads: Sequence[Upload], max_pixels: int, size: int
    ) -> list[tuple[str, Prepared]]:
        """Decode every upload in the pool; a bad one fails the request, the first by position."""
        outcomes = await asyncio.gather(
            *(self.in_pool(_prepare_upload, u, max_pixels, size) for u in uploads),
            return_exceptions=True,
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return [outcome for outcome in outcomes if not isinstance(outcome, BaseException)]

    async def score(self, uploads: Sequence[Upload], keep: bool = True) -> list[Scored]:
        """Score uploads in order; keep=True keeps them for GET /heatmap and GET /regions."""
        started = time.monotonic()
        size, max_pixels = self.engine.input_size, self.settings.max_pixels
        try:
            async with asyncio.timeout(self.settings.request_deadline_s):
                with self._reserve(len(uploads)) as reservation:
                    prepared = await self._prepare_all(uploads, max_pixels, size)
                    futures = reservation.submit([p for _, p in prepared])
                    predictions = await asyncio.gather(*map(asyncio.wrap_future, futures))
        except TimeoutError:
            waited = time.monotonic() - started
            raise ApiError(
                504,
                "deadline_exceeded",
                f"not scored within the {self.settings.request_deadline_s:g} s deadline "
                f"(waited {waited:.3f} s); the service is overloaded, retry later",
            ) from None
        results = [
            Scored(
                image_id,
                prediction.score,
                self.engine.percentile(prediction.score),
                item.width,
                item.height,
                prediction.viraliency,
            )
            for (image_id, item), prediction in zip(prepared, predictions, strict=True)
        ]
        if keep:
            for upload, result in zip(uploads, results, strict=True):
                stored = StoredImage(upload.data, result.viraliency, result.width, result.height)
                self.store.put(result.image_id, stored)
        return results

    def stored(self, image_id: str) -> StoredImage:
        entry = self.store.get(image_id)
        if entry is None:
            raise ApiError(
                404,
                "unknown_image_id",
                f"no recently scored image has id {image_id!r}: ids are kept for "
                f"{self.settings.heatmap_ttl_s:g} s after POST /score (and while the store has "
                "room); score the image again, or POST it to /heatmap directly",
            )
        return entry
