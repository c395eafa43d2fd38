"""The network on its device: checkpoint loading, warm-up and one batched forward pass.

    uint8 (B, S, S, 3) -> device -> float, /255, -mean, /std -> (B, 3, S, S) -> viraliency()

The uint8 batch crosses to the device (4x fewer bytes than float32) and is normalised there.
On CUDA the forward runs in float32 without TF32 (`cuda_precision`; float16 autocast of the
trunk moved every score by ~0.04, past what the percentiles' calibration tolerates: see
bench/RESULTS.md), replayed as CUDA graphs captured at start-up (`cuda_graphs`,
app/cuda_graphs.py); on the CPU in float32, with
batch norms folded into their convolutions (`cpu_fold_batchnorm`, model/fold.py), weights and
input in `cpu_memory_format` (channels_last: NHWC, oneDNN's preferred layout for convolutions;
see bench/RESULTS.md, "CPU inference variants") and `torch_threads` intra-op threads.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from app.cuda_graphs import GraphedForward, buckets
from app.settings import CpuMemoryFormat, CudaPrecision, Settings
from model.checkpoint import CheckpointInfo, Network, load_network
from model.devices import resolve_device
from model.fold import fold_batchnorms
from model.images import normalise
from model.predict import Predicted, predict
from model.viralnet import ViralNet

log = logging.getLogger(__name__)

ViraliencyMap = NDArray[np.float32]  # (h, w) at feature resolution


@dataclass(frozen=True)
class Prediction:
    score: float  # raw s(I) (per-platform heads: the gate's mixture)
    viraliency: ViraliencyMap  # eq. (7), (h, w)
    # Per-platform heads: each platform's own score and map, by name.
    platforms: Mapping[str, tuple[float, ViraliencyMap]] = field(default_factory=dict)

    def choose(self, platform: str | None) -> tuple[float, ViraliencyMap]:
        """The score and map a caller asked for: a named platform's head, or the default."""
        return (self.score, self.viraliency) if platform is None else self.platforms[platform]


class Engine:
    """A loaded network plus its preprocessing; `predict` is called by one thread only."""

    def __init__(
        self,
        net: Network,
        info: CheckpointInfo,
        device: torch.device,
        cuda_precision: CudaPrecision = "float32",
    ) -> None:
        self.net = net
        self.info = info
        self.device = device
        self.half = device.type == "cuda" and cuda_precision == "float16"
        if device.type == "cuda" and not self.half:
            # IEEE float32 in convolutions and matrix products: TF32 keeps fp16's 10-bit
            # mantissa, and with it most of fp16's shift (process-wide, as the flags are).
            torch.backends.cudnn.conv.fp32_precision = "ieee"  # type: ignore[attr-defined]
            torch.backends.cuda.matmul.fp32_precision = "ieee"
        self.input_size = info.preprocessing.input_size
        # The CPU forward pass's intra-op threads: all of them, unless a batch yields some
        # to decoding (`predict`'s yield_cores; app/cores.py).
        self.cpu_threads = torch.get_num_threads()
        self._threads = self.cpu_threads
        self.description = info.to_json(net)  # eta is fixed at inference: describe once
        self.memory_format = torch.contiguous_format
        self.graphs: GraphedForward | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Engine:
        """`load`, then the CPU knobs (torch threads, memory format; CUDA keeps NCHW) or, on
        CUDA, the graphs of the forward pass."""
        if settings.torch_threads > 0:
            torch.set_num_threads(settings.torch_threads)
        engine = cls.load(settings.checkpoint, settings.device, settings.cuda_precision)
        engine.tune_for_cpu(settings.cpu_memory_format, settings.cpu_fold_batchnorm)
        if engine.device.type == "cuda" and settings.cuda_graphs:
            engine.capture_graphs(settings.max_batch_size)
        return engine

    def tune_for_cpu(
        self, memory_format: CpuMemoryFormat = "channels_last", fold_batchnorm: bool = True
    ) -> None:
        """On the CPU: fold the batch norms into their convolutions and keep weights and
        input in `memory_format` (the service's defaults; the command line calls it with
        them). Scores move by float32 rounding only. Nothing on CUDA."""
        if self.device.type != "cpu":
            return
        if fold_batchnorm:
            folded = fold_batchnorms(self.net)
            log.info("batch norms folded", extra={"event": "batchnorm_folded", "count": folded})
        if memory_format == "channels_last":
            self.use_memory_format(torch.channels_last)

    @torch.inference_mode()
    def capture_graphs(self, largest_batch: int) -> None:
        """CUDA graphs of the forward pass at each batch-size bucket up to `largest_batch`; if
        capturing fails, the engine stays eager and says so in the log."""
        started = time.perf_counter()
        sizes = buckets(largest_batch)
        sample = (3, self.input_size, self.input_size)
        try:
            self.graphs = GraphedForward(self._forward, sample, self.device, sizes)
        except RuntimeError as error:
            log.warning(
                "CUDA graphs not captured; the forward pass stays eager",
                extra={"event": "cuda_graphs_failed", "error": str(error)},
            )
            return
        log.info(
            "CUDA graphs captured",
            extra={
                "event": "cuda_graphs",
                "batch_sizes": sizes,
                "seconds": round(time.perf_counter() - started, 3),
            },
        )

    def use_memory_format(self, memory_format: torch.memory_format) -> None:
        """Keep weights (and convert each input batch) in this layout; results are unchanged."""
        self.net.to(memory_format=memory_format)
        self.memory_format = memory_format

    @classmethod
    def load(cls, folder: Path, device: str, cuda_precision: CudaPrecision = "float32") -> Engine:
        started = time.perf_counter()
        resolved = resolve_device(device)
        net, info = load_network(folder, resolved)
        log.info(
            "checkpoint loaded",
            extra={
                "event": "model_loaded",
                "checkpoint": str(folder),
                "device": str(resolved),
                "device_name": _device_name(resolved),
                "backbone": info.network.backbone,
                "arch": info.arch,
                "input_size": info.preprocessing.input_size,
                "calibrated": info.calibration is not None,
                "cuda_precision": cuda_precision if resolved.type == "cuda" else None,
                "seconds": round(time.perf_counter() - started, 3),
            },
        )
        return cls(net, info, resolved, cuda_precision)

    def percentile(self, score: float, platform: str | None = None) -> float | None:
        """Where `score` (of that platform's head, or the default) falls among the calibration
        images' scores; None for an uncalibrated checkpoint."""
        calibration = self.info.calibration_for(platform)
        return None if calibration is None else calibration.percentile(score)

    def _autocast(self) -> AbstractContextManager[Any]:
        if self.half:
            # No cast cache: a CUDA graph capture needs it off, and in inference each weight
            # is cast once per forward pass anyway.
            return torch.autocast(device_type="cuda", dtype=torch.float16, cache_enabled=False)
        return nullcontext()

    def _forward(self, x: torch.Tensor) -> Predicted:
        with self._autocast():
            return predict(self.net, x)

    def to_input(self, pixels: NDArray[np.uint8]) -> torch.Tensor:
        """(B, S, S, 3) uint8 RGB on the host -> (B, 3, S, S) normalised float32 on the device."""
        batch = torch.from_numpy(pixels)
        if self.device.type == "cuda":
            batch = batch.pin_memory().to(self.device, non_blocking=True)
        x = normalise(batch, self.info.preprocessing)
        return x.contiguous(memory_format=self.memory_format)

    @torch.inference_mode()
    def predict(self, images: list[NDArray[np.uint8]], yield_cores: int = 0) -> list[Prediction]:
        """Score a batch of squashed (S, S, 3) uint8 RGB images; one Prediction each, in order.
        On the CPU, `yield_cores` fewer torch threads (at least one) run this batch, leaving
        their cores to the decoding threads (app/cores.py)."""
        if self.device.type == "cpu":
            self._use_threads(max(1, self.cpu_threads - yield_cores))
        x = self.to_input(np.stack(images))
        out = self.graphs(x) if self.graphs is not None else None
        if out is None:  # eager: on the CPU, with graphs off, or above the largest bucket
            out = self._forward(x)  # (B,), (B, h, w)
        scores = out.scores.float().cpu().numpy()
        maps = out.maps.float().cpu().numpy()
        if out.platform_scores is None or out.platform_maps is None:
            return [Prediction(float(s), m) for s, m in zip(scores, maps, strict=True)]
        names = self.info.platforms
        by_platform = out.platform_scores.float().cpu().numpy()
        platform_maps = out.platform_maps.float().cpu().numpy()
        return [
            Prediction(float(s), m, {n: (float(ps[p]), pm[p]) for p, n in enumerate(names)})
            for s, m, ps, pm in zip(scores, maps, by_platform, platform_maps, strict=True)
        ]

    def _use_threads(self, threads: int) -> None:
        if threads != self._threads:  # torch.set_num_threads only when the count changes
            torch.set_num_threads(threads)
            self._threads = threads

    @property
    def localises(self) -> bool:
        """Whether the network crops regions with spatial transformers (ViralNet)."""
        return isinstance(self.net, ViralNet)

    @torch.inference_mode()
    def crop_transforms(self, pixels: NDArray[np.uint8]) -> NDArray[np.float32]:
        """A ViralNet's (s, t_x, t_y) per pyramid level for one squashed (S, S, 3) image.
        -> (K, 3); (0, 3) for LENA. Safe beside `predict`: the network is in eval mode."""
        if not isinstance(self.net, ViralNet):
            return np.zeros((0, 3), dtype=np.float32)
        transforms = self._forward(self.to_input(pixels[None])).transforms
        assert transforms is not None
        return np.asarray(transforms[0].float().cpu().numpy(), dtype=np.float32)

    def batch_rates(self, largest: int) -> dict[int, float]:
        """Images/s of one forward pass at batch sizes 1, 2, 4, ... and `largest` (the best of
        three runs each), stopping once two sizes in a row are 10% slower than the best so far:
        on the CPU a batch whose activations outgrow the caches scores fewer images/s."""
        blank = np.full((self.input_size, self.input_size, 3), 127, dtype=np.uint8)
        self.predict([blank])  # one-time set-up costs land here
        rates: dict[int, float] = {}
        behind = 0
        for size in buckets(largest):
            seconds = []
            for _ in range(3):
                started = time.perf_counter()
                self.predict([blank] * size)
                seconds.append(time.perf_counter() - started)
            rates[size] = size / max(min(seconds), 1e-9)
            behind = behind + 1 if rates[size] < 0.9 * max(rates.values()) else 0
            if behind == 2:
                break
        return rates

    def warm_up(self, batch_size: int) -> float:
        """Run dummy batches (1, then the largest) so the first request pays no set-up costs;
        returns the images/s of the largest one, the service-rate estimate before any request."""
        started = time.perf_counter()
        blank = np.full((self.input_size, self.input_size, 3), 127, dtype=np.uint8)
        self.predict([blank])  # one-time set-up costs land here
        largest = time.perf_counter()
        self.predict([blank] * batch_size)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        ended = time.perf_counter()
        rate = batch_size / max(ended - largest, 1e-6)
        log.info(
            "warm-up done",
            extra={
                "event": "warmed_up",
                "batch_sizes": sorted({1, batch_size}),
                "seconds": round(ended - started, 3),
                "images_per_s": round(rate, 1),
            },
        )
        return rate


def choose_batch_size(rates: Mapping[int, float], slack: float = 0.1) -> int:
    """The smallest measured batch size within `slack` of the best images/s: where the curve
    is flat, start-up timing noise must not pick a larger batch (it picked 16 and 2 on the
    same machine at 5%, bench/RESULTS.md)."""
    best = max(rates.values())
    return min(size for size, rate in rates.items() if rate >= (1 - slack) * best)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} torch threads)"
