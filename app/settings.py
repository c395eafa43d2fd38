"""The service's one settings object, read from `VIRALIENCY_*` environment variables."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

CudaPrecision = Literal["float32", "float16"]
CpuMemoryFormat = Literal["channels_last", "contiguous"]


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 4


def _on_cuda(device: str) -> bool:
    """Whether the network will run on CUDA (torch is imported only when this is asked)."""
    from model.devices import DeviceError, resolve_device

    try:
        return resolve_device(device).type == "cuda"
    except DeviceError:  # a CUDA device this machine lacks: loading the engine says so
        return True


def _default_decode_threads(device: str) -> int:
    """Every core decodes for a GPU; on the CPU the forward pass's OpenMP threads lose more to
    a decoding thread on their core than decoding gains (on 2 cores, 1 decoding thread served
    11-15% more images/s than 2 at every concurrency: bench/RESULTS.md)."""
    return _cpu_count() if _on_cuda(device) else max(1, _cpu_count() // 2)


class Settings(BaseSettings):
    """Every knob of the service; each field is `VIRALIENCY_<NAME>` in the environment."""

    model_config = SettingsConfigDict(env_prefix="VIRALIENCY_", frozen=True, extra="ignore")

    checkpoint: Path = Field(
        default=Path("weights"), description="Checkpoint folder (config.json + model.safetensors)."
    )
    device: str = Field(
        default="auto",
        pattern=r"^(auto|cpu|cuda(:\d+)?)$",
        description="auto (CUDA when available, else CPU), cpu, cuda or cuda:N.",
    )
    max_batch_size: int = Field(default=64, ge=1, description="Most images in one forward pass.")
    max_wait_ms: float = Field(
        default=2.0,
        ge=0,
        description="A batch closes this long after its first image at the latest.",
    )
    batch_close_when_idle: bool = Field(
        default=True,  # bench/RESULTS.md: a lone request otherwise waits out max_wait_ms
        description="Also close a batch as soon as no other admitted image is queued or "
        "being decoded: a lone request skips max_wait_ms.",
    )
    max_queued_images: int = Field(
        default=1024,
        ge=1,
        description="Images admitted and not yet scored, a hard ceiling; beyond it: 503.",
    )
    request_deadline_s: float = Field(
        default=10.0, gt=0, description="A request not scored within this time gets 504."
    )
    deadline_margin: float = Field(
        default=0.5,
        ge=0,
        lt=1,
        description="Share of request_deadline_s kept free for what the wait estimate misses: "
        "a request is admitted only when its images are estimated to be scored within "
        "(1 - deadline_margin) x request_deadline_s; beyond it: 503 with Retry-After.",
    )
    max_queued_bytes: int = Field(
        default=512 * 2**20,
        ge=1,
        description="Upload bytes admitted requests may hold in memory together, counted as "
        "bodies arrive; beyond it: 503. A request that could never fit: 413.",
    )
    body_timeout_s: float = Field(
        default=30.0, gt=0, description="A request body not received within this time: 408."
    )
    max_upload_bytes: int = Field(
        default=20 * 2**20, ge=1, description="Largest file per upload: 413."
    )
    max_pixels: int = Field(
        default=40_000_000, ge=1, description="Largest width x height, read from the header: 413."
    )
    max_images_per_request: int = Field(
        default=32, ge=1, description="Most files per request: 413."
    )
    heatmap_store_max_items: int = Field(
        default=10_000, ge=1, description="Most images kept for /heatmap."
    )
    heatmap_store_max_bytes: int = Field(
        default=256 * 2**20, ge=1, description="Most bytes kept for /heatmap (uploads and maps)."
    )
    heatmap_ttl_s: float = Field(
        default=900.0, gt=0, description="How long a scored image's map is kept."
    )
    heatmap_store_url: str | None = Field(
        default=None,
        pattern=r"^(redis|rediss|unix)://",
        description="unset: keep scored images in this process; redis://host:port/db: in one "
        "Redis (or Valkey) shared by every replica, so any replica answers GET /heatmap.",
    )
    heatmap_store_timeout_s: float = Field(
        default=0.25,
        gt=0,
        description="Longest wait for one call to the shared store; past it the store counts as "
        "unavailable (score without heatmap_url, GET /heatmap 503).",
    )
    heatmap_store_max_item_bytes: int = Field(
        default=24 * 2**20,
        ge=1,
        description="Largest entry kept (upload as sent plus its map); a larger one is scored "
        "but not kept.",
    )
    replica_name: str = Field(
        default_factory=socket.gethostname,
        description="Names this replica in the X-Viraliency-Replica response header.",
    )
    api_keys_file: Path | None = Field(
        default=None,
        description="unset: no keys needed. A file of API keys, one per line (or sha256:<hex> "
        "of a key); re-read on SIGHUP.",
    )
    metrics_public: bool = Field(
        default=False,
        description="Serve GET /metrics without a key even when API keys are on.",
    )
    rate_limit: float | None = Field(
        default=None,
        gt=0,
        description="unset: no limit. Images per second per API key (per client address "
        "without keys), a token bucket; beyond it: 429.",
    )
    rate_limit_burst: float = Field(
        default=32, ge=1, description="Images a key may send at once before rate_limit applies."
    )
    decode_threads: int = Field(
        default_factory=lambda data: _default_decode_threads(data["device"]),
        ge=1,
        description="Threads decoding and resizing uploads. Default: the CPU count when the "
        "network runs on CUDA; half of it (at least 1) on the CPU, where the forward pass's "
        "threads need the cores (bench/RESULTS.md, thread split).",
    )
    torch_threads: int = Field(
        default=0,
        ge=0,
        description="Intra-op threads of the CPU forward pass (torch.set_num_threads); "
        "0 keeps torch's default (the CPU count).",
    )
    gil_switch_interval_ms: float = Field(
        default=5.0,
        gt=0,
        description="How long a thread holding the GIL keeps it while another waits "
        "(sys.setswitchinterval). The forward pass takes the GIL back after every torch op, "
        "and waits this long each time the event loop or a decode thread holds it.",
    )
    inference_process: bool = Field(
        default_factory=lambda data: not _on_cuda(data["device"]),
        description="Run the forward pass in a child process of its own (LitServe's layout): "
        "its torch ops never wait for the HTTP process's GIL. The HTTP process keeps "
        "admission, decoding, metrics and the heatmap store. Default: on when the network "
        "runs on the CPU (on 2 cores, the shipped checkpoint: 1.09x, 1.38x and 1.31x "
        "LitServe's images/s at concurrency 1, 8 and 32, against 0.86x, 1.07x and 1.20x "
        "in one process; bench/RESULTS.md), off on CUDA (not measured there).",
    )
    cpu_memory_format: CpuMemoryFormat = Field(
        default="channels_last",
        description="Memory layout of the network's weights and input on the CPU: "
        "channels_last (NHWC) or contiguous (NCHW). Scores are the same either way.",
    )
    cpu_fold_batchnorm: bool = Field(
        default=True,
        description="On the CPU, fold each batch norm into the convolution before it at "
        "start-up: scores move by float32 rounding (under 1e-4) and a 448 px image scores "
        "1.2x as fast (bench/RESULTS.md, CPU inference variants). No effect on CUDA.",
    )
    cpu_yield_to_decoding: bool = Field(
        default=True,
        description="On the CPU, a batch that starts while more decoding is queued than the "
        "batch takes runs with one torch thread fewer per decoding thread, leaving their "
        "cores to decoding (app/cores.py; eight 12 MP photos per request: bench/RESULTS.md, "
        "decode cost by photo size). No effect on CUDA.",
    )
    gpu_decode: bool = Field(
        default=True,
        description="On CUDA, decode JPEG uploads on the GPU in batches (nvJPEG), other "
        "formats and any JPEG it cannot decode on the CPU; no effect on the CPU.",
    )
    cpu_batch_sizing: bool = Field(
        default=True,
        description="On the CPU, time the forward pass at start-up at batch sizes 1, 2, 4, ... "
        "up to max_batch_size and batch no larger than the smallest size within 10% of the "
        "best images/s (on 2 cores a 448 px batch of 4 scores 14% fewer images/s than one "
        "image at a time). No effect on CUDA.",
    )
    cuda_precision: CudaPrecision = Field(
        default="float32",
        description="The forward pass on CUDA: float32 (IEEE, no TF32: the CPU's scores, which "
        "the percentiles are calibrated on) or float16 (autocast of the trunk: faster, "
        "every score moved by ~0.04). No effect on the CPU.",
    )
    cuda_graphs: bool = Field(
        default=True,
        description="On CUDA, replay the forward pass as CUDA graphs captured at start-up, one "
        "per batch size bucket (powers of two up to max_batch_size; a batch is padded up to "
        "its bucket); off: eager PyTorch. No effect on the CPU.",
    )
    max_concurrent_renders: int = Field(
        default_factory=lambda data: max(1, data["decode_threads"] - 1),
        ge=1,
        description="Heatmaps and regions drawn at once; beyond it: 503. Defaults to one less "
        "than decode_threads (and must stay below it), so scoring always keeps a decoding "
        "thread; with a single decoding thread, drawings and scoring share it.",
    )
    retry_after_s: int = Field(
        default=1,
        ge=0,
        description="Retry-After header on 503 answers other than queue_full (which sets it "
        "from the estimated wait).",
    )
    shutdown_timeout_s: float = Field(
        default=30.0, ge=0, description="Longest wait on shutdown for accepted images to be scored."
    )
    host: str = Field(
        default="127.0.0.1", description="Address to listen on (0.0.0.0 in a container)."
    )
    port: int = Field(default=8000, ge=0, le=65535, description="Port to listen on.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Log level of the JSON-lines log on stderr."
    )

    @property
    def admission_limit_s(self) -> float:
        """The longest estimated wait a request is admitted with."""
        return (1.0 - self.deadline_margin) * self.request_deadline_s

    @model_validator(mode="after")
    def _requests_fit_in_the_queue(self) -> Settings:
        if self.max_images_per_request > self.max_queued_images:
            raise ValueError(
                f"max_images_per_request ({self.max_images_per_request}) is larger than "
                f"max_queued_images ({self.max_queued_images}): such a request could never be "
                "admitted. Lower VIRALIENCY_MAX_IMAGES_PER_REQUEST or raise "
                "VIRALIENCY_MAX_QUEUED_IMAGES."
            )
        if self.max_upload_bytes > self.max_queued_bytes:
            raise ValueError(
                f"max_upload_bytes ({self.max_upload_bytes}) is larger than max_queued_bytes "
                f"({self.max_queued_bytes}): such a file could never be admitted. Lower "
                "VIRALIENCY_MAX_UPLOAD_BYTES or raise VIRALIENCY_MAX_QUEUED_BYTES."
            )
        if 1 < self.decode_threads <= self.max_concurrent_renders:
            raise ValueError(
                f"max_concurrent_renders ({self.max_concurrent_renders}) must be below "
                f"decode_threads ({self.decode_threads}), so that drawing heatmaps never takes "
                "every decoding thread from scoring. Lower VIRALIENCY_MAX_CONCURRENT_RENDERS or "
                "raise VIRALIENCY_DECODE_THREADS."
            )
        return self
