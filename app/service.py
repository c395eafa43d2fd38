"""The scoring pipeline behind every route, as named stages:

    admit -> decode -> batch -> forward -> unbatch -> respond
    reserve  (thread pool)  (Batcher queue)  (worker thread)  (score, percentile, keep)  (route)

`Service` owns the engine, the batcher and its live `ServiceRate`, the upload byte budget, the
decoding pool and the heatmap store; the lifespan starts it (load, warm up: the first rate) and
stops it (refuse new work, finish what was admitted). `app.uploads.UploadRoute` admits a request
(`reserve`, 503 at once when its images would not be scored within the deadline) before its
body is read; the route then scores its uploads through the `Admission`. Drawing goes through
`render`, bounded apart from scoring. Nothing here knows a route's name.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from app.batching import Batcher, QueueFullError, Reservation, ShuttingDownError
from app.budget import BudgetExceededError, ByteBudget
from app.cores import DecodeBacklog, DecodeJob, cores_to_yield
from app.engine import Engine, Prediction, ViraliencyMap, choose_batch_size
from app.errors import ApiError
from app.gpu_decode import GpuDecodeStage, use_gpu_decode
from app.images import Prepared, prepare
from app.inference_process import EngineProcess, Forward
from app.metrics import Metrics
from app.rate import ServiceRate
from app.settings import Settings
from app.store import StoredImage
from app.stores import open_store

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
    """One request's reserved queue slots: its stages decode -> batch -> unbatch.

    (admit happens before: `Service.reserve`; forward runs on the batcher's worker thread;
    respond is the route's.)
    """

    def __init__(self, service: Service, reservation: Reservation[Prepared, Prediction]) -> None:
        self._service = service
        self._reservation = reservation
        self.settings = service.settings

    async def score(
        self, uploads: Sequence[Upload], keep: bool = True, platform: str | None = None
    ) -> list[Scored]:
        """Score uploads in order; keep=True keeps them for GET /heatmap and GET /regions.
        `platform` picks that platform's head of a checkpoint that has one per platform."""
        prepared, queued = await self.decode_and_queue(uploads)
        predictions = await self.batch(queued)
        return await self.unbatch(uploads, prepared, predictions, keep, platform)

    async def decode_and_queue(
        self, uploads: Sequence[Upload]
    ) -> tuple[list[tuple[str, Prepared]], list[Future[Prediction]]]:
        """Decode every upload and queue each image for the batcher's worker (forward) as soon
        as it is decoded, so the forward pass overlaps the rest of the request's decoding: eight
        12 MP photos no longer decode one after another before the first is scored
        (bench/RESULTS.md, decode cost by photo size). The GPU decoder decodes a request's
        JPEGs in one batch, then queues them. A bad upload fails the request, the first by
        position, and cancels its images already queued (the worker skips them)."""
        service = self._service
        if service.gpu_decode is not None:
            prepared = await service.gpu_decode.prepare_all([(u.data, u.label) for u in uploads])
            return prepared, self._reservation.submit([item for _, item in prepared])
        queued: dict[int, Future[Prediction]] = {}

        async def decode_one(position: int, upload: Upload) -> tuple[str, Prepared]:
            item = await service.prepare_one(upload)
            queued[position] = self._reservation.submit([item[1]])[0]
            return item

        try:
            outcomes = await asyncio.gather(
                *(decode_one(i, upload) for i, upload in enumerate(uploads)),
                return_exceptions=True,
            )
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
        except BaseException:  # a bad upload, or the request gave up while decoding
            for future in queued.values():
                future.cancel()
            raise
        prepared = [outcome for outcome in outcomes if not isinstance(outcome, BaseException)]
        return prepared, [queued[i] for i in range(len(uploads))]

    async def batch(self, queued: Sequence[Future[Prediction]]) -> list[Prediction]:
        """Wait for each queued image's result from the batcher's worker (forward)."""
        return list(await asyncio.gather(*map(asyncio.wrap_future, queued)))

    async def unbatch(
        self,
        uploads: Sequence[Upload],
        prepared: Sequence[tuple[str, Prepared]],
        predictions: Sequence[Prediction],
        keep: bool,
        platform: str | None = None,
    ) -> list[Scored]:
        """Per image: its score, percentile and map, kept for later drawing when asked."""
        service = self._service
        engine = service.engine
        chosen = [prediction.choose(platform) for prediction in predictions]
        kept = await asyncio.gather(
            *(
                service.keep(upload, image_id, item, viraliency)
                for upload, (image_id, item), (_, viraliency) in zip(
                    uploads, prepared, chosen, strict=True
                )
                if keep
            )
        )
        return [
            Scored(
                image_id,
                score,
                engine.percentile(score, platform),
                item.width,
                item.height,
                viraliency,
                kept=keep and kept[i],
            )
            for i, ((image_id, item), (score, viraliency)) in enumerate(
                zip(prepared, chosen, strict=True)
            )
        ]


def _prepare_upload(
    upload: Upload, max_pixels: int, size: int, job: DecodeJob
) -> tuple[str, Prepared]:
    started = time.perf_counter()
    result = (
        hashlib.sha256(upload.data).hexdigest(),
        prepare(upload.data, upload.label, max_pixels, size),
    )
    job.done(time.perf_counter() - started)
    return result


class Service:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        metrics: Metrics,
        warm_rate: float,
        batch_size: int | None = None,
        runner: Forward | None = None,
    ) -> None:
        """`batch_size`: the largest batch (default: settings.max_batch_size); `runner`: what
        runs the batches (default: `engine` itself; an EngineProcess in its own process)."""
        self.settings = settings
        self.engine = engine
        self.runner: Forward = engine if runner is None else runner
        self.metrics = metrics
        self.rate = ServiceRate(warm_rate)
        self.forward_rate = warm_rate  # images/s of the forward pass alone, from start-up
        self.decode_backlog = DecodeBacklog(settings.decode_threads)
        self.batcher: Batcher[Prepared, Prediction] = Batcher(
            self.forward,
            max_batch_size=batch_size or settings.max_batch_size,
            max_wait_s=settings.max_wait_ms / 1000.0,
            max_pending=settings.max_queued_images,
            on_batch=lambda images, _: metrics.batch_size.observe(images),
            name=f"batcher-{engine.device}",
            close_when_idle=settings.batch_close_when_idle,
            rate=self.rate,
            admit_within_s=settings.admission_limit_s,
        )
        self.upload_bytes = ByteBudget(settings.max_queued_bytes)
        self.decoder = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="decode")
        self.store = open_store(settings, self._store_failed)
        self.render_slots = RenderSlots(settings.max_concurrent_renders)
        self.gpu_decode = self._gpu_decode_stage()
        self.ready = False
        self.admitted = 0  # requests admitted since start (logged at stop)
        metrics.queue_depth.set_function(lambda: self.batcher.pending)
        metrics.service_rate.set_function(self.batcher.current_rate)
        metrics.estimated_wait.set_function(lambda: self.batcher.estimated_wait_s(1) or 0.0)
        metrics.admission_limit.set(settings.admission_limit_s)
        metrics.queued_bytes.set_function(lambda: self.upload_bytes.held)
        metrics.renders_in_flight.set_function(lambda: self.render_slots.in_use)
        metrics.heatmap_store_items.set_function(lambda: len(self.store))
        metrics.heatmap_store_bytes.set_function(lambda: self.store.nbytes)

    @classmethod
    async def start(cls, settings: Settings, metrics: Metrics) -> Service:
        """Load the checkpoint and warm it up, off the event loop; then admit requests."""
        sys.setswitchinterval(settings.gil_switch_interval_ms / 1000)
        runner: Forward
        if settings.inference_process:
            # The batches run in the child; this copy only crops /regions (one thread, eager).
            local = settings.model_copy(update={"torch_threads": 1, "cuda_graphs": False})
            engine = await asyncio.to_thread(Engine.from_settings, local)
            runner = await asyncio.to_thread(EngineProcess, settings)
        else:
            engine = await asyncio.to_thread(Engine.from_settings, settings)
            runner = engine
        batch_size = settings.max_batch_size
        if engine.device.type == "cpu" and settings.cpu_batch_sizing:
            # Timing each batch size warms the network up too: the chosen size's images/s is
            # the rate estimate before any request, as warm_up's would be.
            rates = await asyncio.to_thread(runner.batch_rates, settings.max_batch_size)
            batch_size = choose_batch_size(rates)
            warm_rate = rates[batch_size]
            log.info(
                "batch size chosen",
                extra={
                    "event": "batch_size_chosen",
                    "batch_size": batch_size,
                    "images_per_s": {str(k): round(v, 3) for k, v in rates.items()},
                },
            )
        else:
            warm_rate = await asyncio.to_thread(runner.warm_up, batch_size)
        service = cls(settings, engine, metrics, warm_rate, batch_size, runner)
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
        if isinstance(self.runner, EngineProcess):
            await asyncio.to_thread(self.runner.close, self.settings.shutdown_timeout_s)
        await self.store.close()
        log.info(
            "stopped",
            extra={"event": "stopped", "drained": drained, "admitted_requests": self.admitted},
        )

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

    def forward(self, prepared: list[Prepared]) -> list[Prediction]:
        """The forward stage, on the batcher's worker thread: one batch through the network,
        on the CPU with a core left to each decoding thread while decoding is backed up."""
        yielded = self.cores_for_decoding(len(prepared))
        if yielded:
            self.metrics.yielded_batches.inc()
        return self.runner.predict([p.pixels for p in prepared], yielded)

    def cores_for_decoding(self, images: int) -> int:
        """Torch threads a batch of `images` leaves to decoding (app/cores.py): the decoding
        threads' count when the decoding queued outlasts the batch, else 0 (and always 0 on
        CUDA, or with VIRALIENCY_CPU_YIELD_TO_DECODING off)."""
        if self.engine.device.type != "cpu" or not self.settings.cpu_yield_to_decoding:
            return 0
        batch_s = images / self.forward_rate
        return cores_to_yield(self.decode_backlog.seconds, batch_s, self.settings.decode_threads)

    async def in_pool(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run blocking work (decoding, rendering, encoding) on the decoding threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.decoder, lambda: fn(*args, **kwargs))

    def refusal(self, exc: QueueFullError | ShuttingDownError | BudgetExceededError) -> ApiError:
        """503 for a request that cannot be admitted now, with when to try again."""
        if isinstance(exc, ShuttingDownError):
            message = "the service is shutting down; retry on another instance"
            retry = self.settings.retry_after_s
            return ApiError(503, "shutting_down", message, headers={"Retry-After": str(retry)})
        if isinstance(exc, QueueFullError) and exc.wait_s is not None and exc.limit_s is not None:
            # The queue must drain by the excess before this request would fit.
            retry = max(1, math.ceil(exc.wait_s - exc.limit_s))
            message = (
                f"overloaded: estimated wait {exc.wait_s:.2f} s vs the deadline of "
                f"{self.settings.request_deadline_s:g} s ({exc}); retry after {retry} s"
            )
        else:
            retry = max(1, math.ceil(self.batcher.estimated_wait_s(0) or 0.0))
            message = f"overloaded: {exc}; retry after {retry} s"
        return ApiError(503, "queue_full", message, headers={"Retry-After": str(retry)})

    def reserve(self, count: int) -> Reservation[Prepared, Prediction]:
        """The admit stage: queue slots for `count` images, or 503 at once (see `refusal`)."""
        try:
            return self.batcher.reserve(count)
        except (QueueFullError, ShuttingDownError) as exc:
            raise self.refusal(exc) from None

    def admission(self, reservation: Reservation[Prepared, Prediction]) -> Admission:
        """A request holding slots for all its images: from here on it is owed an answer."""
        self.admitted += 1
        self.metrics.admitted.inc()
        return Admission(self, reservation)

    def extend(self, reservation: Reservation[Prepared, Prediction], count: int) -> None:
        """`count` more slots for an admitted request, or 503 at once."""
        try:
            reservation.extend(count)
        except (QueueFullError, ShuttingDownError) as exc:
            raise self.refusal(exc) from None

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
                f"(waited {waited:.3f} s); retry later",
            ) from None

    def _render_busy(self) -> ApiError:
        return ApiError(
            503,
            "render_busy",
            f"{self.settings.max_concurrent_renders} drawings are in progress, the most at once "
            "(VIRALIENCY_MAX_CONCURRENT_RENDERS); retry later, or ask for a smaller one",
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

    async def prepare_one(self, upload: Upload) -> tuple[str, Prepared]:
        """One upload's image id and network input, decoded in the pool (the CPU decoder)."""
        size, max_pixels = self.engine.input_size, self.settings.max_pixels
        job = self.decode_backlog.queued(len(upload.data))
        try:
            return await self.in_pool(_prepare_upload, upload, max_pixels, size, job)
        finally:
            job.done()  # failed, or cancelled before it ran: off the backlog all the same

    # The heatmap store (app/store.py): in this process, or shared on Redis (may be down).

    def _store_failed(self, operation: str) -> None:
        self.metrics.heatmap_store_failures.labels(operation=operation).inc()

    async def keep(
        self, upload: Upload, image_id: str, prepared: Prepared, viraliency: ViraliencyMap
    ) -> bool:
        """Keep a scored image for GET /heatmap and /regions; False when it alone is too big
        or the shared store is unavailable (logged and counted by the store)."""
        stored = StoredImage(upload.data, viraliency, prepared.width, prepared.height)
        if await self.store.put(image_id, stored):
            return True
        log.info(
            "not kept",
            extra={
                "event": "not_kept",
                "image_id": image_id,
                "bytes": stored.nbytes,
                "limit": self.settings.heatmap_store_max_bytes,
            },
        )
        return False

    async def stored(self, image_id: str) -> StoredImage | None:
        """A kept image, or None when it is unknown or expired; StoreUnavailableError when the
        shared store cannot be read now."""
        return await self.store.get(image_id)
