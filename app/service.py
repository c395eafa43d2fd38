"""The scoring pipeline behind every route: decode -> batch -> predict -> unbatch -> keep.

    uploads --(thread pool)--> Prepared --(Batcher, one worker thread)--> Prediction

`Service` owns the engine, the batcher, the decoding pool and the heatmap store; the lifespan
starts it (load, warm up) and stops it (refuse new work, finish what was admitted). A route
reserves queue slots with `admit` before it reads any upload into memory, then scores them
through the `Admission`; drawing heatmaps goes through `render`, bounded apart from scoring.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from app.batching import Batcher, QueueFullError, Reservation, ShuttingDownError
from app.engine import Engine, Prediction, ViraliencyMap
from app.errors import ApiError
from app.gpu_decode import GpuDecodeStage, use_gpu_decode
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
    kept: bool = False  # in the store, so GET /heatmap and /regions find it by image_id


class RenderSlots:
    """A non-blocking counting semaphore, released from any thread, that counts its holders."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.in_use = 0
        self._lock = threading.Lock()

    def try_acquire(self) -> bool:
        with self._lock:
            if self.in_use >= self.size:
                return False
            self.in_use += 1
            return True

    def release(self) -> None:
        with self._lock:
            self.in_use -= 1


class Admission:
    """One request's reserved queue slots, inside its deadline: decode, batch, unbatch, keep."""

    def __init__(self, service: Service, reservation: Reservation[Prepared, Prediction]) -> None:
        self._service = service
        self._reservation = reservation

    async def score(self, uploads: Sequence[Upload], keep: bool = True) -> list[Scored]:
        """Score uploads in order; keep=True keeps them for GET /heatmap and GET /regions."""
        service = self._service
        prepared = await service.prepare_all(uploads)
        futures = self._reservation.submit([item for _, item in prepared])
        predictions = await asyncio.gather(*map(asyncio.wrap_future, futures))
        return [
            Scored(
                image_id,
                prediction.score,
                service.engine.percentile(prediction.score),
                item.width,
                item.height,
                prediction.viraliency,
                kept=keep and service.keep(upload, image_id, item, prediction),
            )
            for upload, (image_id, item), prediction in zip(
                uploads, prepared, predictions, strict=True
            )
        ]


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
        self.render_slots = RenderSlots(settings.max_concurrent_renders)
        self.gpu_decode = self._gpu_decode_stage()
        self.ready = False
        metrics.queue_depth.set_function(lambda: self.batcher.pending)
        metrics.renders_in_flight.set_function(lambda: self.render_slots.in_use)
        metrics.heatmap_store_items.set_function(lambda: len(self.store))
        metrics.heatmap_store_bytes.set_function(lambda: self.store.nbytes)

    @classmethod
    async def start(cls, settings: Settings, metrics: Metrics) -> Service:
        """Load the checkpoint and warm it up, off the event loop; then admit requests."""
        engine = await asyncio.to_thread(Engine.from_settings, settings)
        await asyncio.to_thread(engine.warm_up, settings.max_batch_size)
        service = cls(settings, engine, metrics)
        service.batcher.start()
        if service.gpu_decode is not None:
            service.gpu_decode.start()
        service.ready = True
        return service

    async def stop(self) -> None:
        """Refuse new work, finish every admitted image, then stop the worker threads."""
        self.ready = False
        self.batcher.close()
        log.info("draining", extra={"event": "draining", "pending": self.batcher.pending})
        drained = await asyncio.to_thread(self.batcher.stop, self.settings.shutdown_timeout_s)
        if self.gpu_decode is not None:  # after the drain: admitted images still decode here
            await asyncio.to_thread(self.gpu_decode.stop, self.settings.shutdown_timeout_s)
        await asyncio.to_thread(self.decoder.shutdown, wait=True, cancel_futures=True)
        log.info("stopped", extra={"event": "stopped", "drained": drained})

    def _gpu_decode_stage(self) -> GpuDecodeStage | None:
        """Batched nvJPEG decoding, only on CUDA with VIRALIENCY_GPU_DECODE on."""
        if not use_gpu_decode(self.engine.device, self.settings.gpu_decode):
            return None
        return GpuDecodeStage(
            self.engine.device,
            self.settings.max_pixels,
            self.engine.input_size,
            max_batch_size=self.settings.max_batch_size,
            max_wait_s=self.settings.max_wait_ms / 1000.0,
            max_pending=self.settings.max_queued_images,
            in_pool=self.in_pool,
        )

    def _predict(self, prepared: list[Prepared]) -> list[Prediction]:
        return self.engine.predict([p.pixels for p in prepared])

    async def in_pool(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run blocking work (decoding, rendering, encoding) on the decoding threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.decoder, lambda: fn(*args, **kwargs))

    def _refusal(self, exc: QueueFullError | ShuttingDownError) -> ApiError:
        retry = {"Retry-After": str(self.settings.retry_after_s)}
        if isinstance(exc, QueueFullError):
            return ApiError(503, "queue_full", f"overloaded: {exc}; retry later", headers=retry)
        message = "the service is shutting down; retry on another instance"
        return ApiError(503, "shutting_down", message, headers=retry)

    def check_room(self, count: int) -> None:
        """503 at once when `count` images could not be admitted now (nothing is reserved)."""
        try:
            self.batcher.check(count)
        except (QueueFullError, ShuttingDownError) as exc:
            raise self._refusal(exc) from None

    @asynccontextmanager
    async def deadline(self) -> AsyncIterator[None]:
        """504 when the block takes longer than request_deadline_s."""
        started = time.monotonic()
        timeout = asyncio.timeout(self.settings.request_deadline_s)
        try:
            async with timeout:
                yield
        except TimeoutError:
            if not timeout.expired():
                raise
            waited = time.monotonic() - started
            raise ApiError(
                504,
                "deadline_exceeded",
                f"not answered within the {self.settings.request_deadline_s:g} s deadline "
                f"(waited {waited:.3f} s); the service is overloaded, retry later",
            ) from None

    @asynccontextmanager
    async def admit(self, count: int) -> AsyncIterator[Admission]:
        """Reserve queue slots for `count` images (503 when full) before their bytes are read;
        the deadline covers the whole block, and slots left unused are released on any exit."""
        async with self.deadline():
            try:
                reservation = self.batcher.reserve(count)
            except (QueueFullError, ShuttingDownError) as exc:
                raise self._refusal(exc) from None
            with reservation:
                yield Admission(self, reservation)

    def _render_busy(self) -> ApiError:
        return ApiError(
            503,
            "render_busy",
            f"{self.settings.max_concurrent_renders} heatmaps or region maps are being drawn, "
            "the most at once; retry later, or ask for a smaller one with max_side",
            headers={"Retry-After": str(self.settings.retry_after_s)},
        )

    def check_render_room(self) -> None:
        """503 at once when every render slot is taken (nothing is acquired)."""
        if self.render_slots.in_use >= self.render_slots.size:
            raise self._render_busy()

    async def render(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Blocking drawing (heatmaps, regions) on the decoding threads, at most
        max_concurrent_renders at once (503 beyond it) and within the deadline (504).

        A slot is freed when the drawing itself ends, not when a request stops waiting for it,
        so requests that time out cannot let more drawings run than the bound.
        """
        if not self.render_slots.try_acquire():
            raise self._render_busy()
        try:
            job = self.decoder.submit(fn, *args, **kwargs)
        except BaseException:
            self.render_slots.release()
            raise
        job.add_done_callback(lambda _: self.render_slots.release())
        async with self.deadline():
            return await asyncio.wrap_future(job)

    async def prepare_all(self, uploads: Sequence[Upload]) -> list[tuple[str, Prepared]]:
        """Decode every upload in the pool; a bad one fails the request, the first by position."""
        if self.gpu_decode is not None:
            return await self.gpu_decode.prepare_all([(u.data, u.label) for u in uploads])
        size, max_pixels = self.engine.input_size, self.settings.max_pixels
        outcomes = await asyncio.gather(
            *(self.in_pool(_prepare_upload, u, max_pixels, size) for u in uploads),
            return_exceptions=True,
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return [outcome for outcome in outcomes if not isinstance(outcome, BaseException)]

    def keep(
        self, upload: Upload, image_id: str, prepared: Prepared, prediction: Prediction
    ) -> bool:
        """Keep a scored image for GET /heatmap and /regions; False when it alone is too big."""
        stored = StoredImage(upload.data, prediction.viraliency, prepared.width, prepared.height)
        if self.store.put(image_id, stored):
            return True
        log.info(
            "not kept for /heatmap",
            extra={
                "event": "not_kept",
                "image_id": image_id,
                "bytes": stored.nbytes,
                "limit": self.settings.heatmap_store_max_bytes,
            },
        )
        return False

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
