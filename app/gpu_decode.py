"""JPEG uploads decoded on the GPU in batches (nvJPEG via torchvision), with a CPU fallback.

    uploads -> header check (JPEG, RGB or grey, upright, small enough) -+-> decode_jpeg(list,
                                                                        |   device) -> area
                                                                        |   resize to S x S ->
                                                                        |   (S, S, 3) uint8
    anything else (PNG, CMYK, EXIF-rotated, tiny, cut off) or an error -+-> app.images.prepare

On a GPU host the decoding, not the network, is the budget (issue 15: one H100 runs
MobileNetV2 at ~100k images/s, 16 CPU cores decode ~2,500 640x480 JPEGs/s). The resize is
`F.interpolate(mode="area")`, an average over each output pixel's footprint like OpenCV's
INTER_AREA (which the CPU path uses) up to the footprint's fractional edges; the squashed
input reaches the host as uint8 (150 kB per image) and takes the engine's usual road.

`GpuDecodeStage` batches JPEGs across requests with the service's own `Batcher`; it is used
only when the engine is on CUDA and `VIRALIENCY_GPU_DECODE` is on (`use_gpu_decode`).
`prepare_jpegs` runs on any device (the tests run it on the CPU, where torchvision decodes
with libjpeg-turbo), so every fallback is testable without a GPU.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import Awaitable, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg

from app.batching import Batcher
from app.images import Prepared, prepare

Prepare = Callable[[bytes, str, int, int], Prepared]
InPool = Callable[[Callable[[list[bytes]], list[str]], list[bytes]], Awaitable[list[str]]]
ORIENTATION = 0x0112  # EXIF tag


def use_gpu_decode(device: torch.device, enabled: bool) -> bool:
    """The GPU path is chosen only on CUDA, and only when the setting is on."""
    return enabled and device.type == "cuda"


def gpu_decodable(data: bytes, max_pixels: int, size: int) -> tuple[int, int] | None:
    """(width, height) of a JPEG the GPU can decode and area-resize as it is, from its header
    alone; None sends the upload to the CPU path (which also gives any error its 4xx)."""
    if not data.startswith(b"\xff\xd8\xff"):
        return None
    # nvJPEG decodes a truncated JPEG without an error (grey where the data stops: seen on an
    # H200), where libjpeg refuses it; so a JPEG must end at its end-of-image marker to take the
    # GPU road. Others (cut off, or with a trailer such as some phones append) go to the CPU.
    if not data.rstrip(b"\0").endswith(b"\xff\xd9"):
        return None
    try:
        with Image.open(io.BytesIO(data), formats=["JPEG"]) as image:
            width, height = image.size
            upright = image.getexif().get(ORIENTATION, 1) == 1
            plain = image.mode in ("RGB", "L")  # not CMYK / YCCK (Adobe) JPEGs
    except Exception:
        return None
    if not (upright and plain) or width * height > max_pixels:
        return None
    if width < size or height < size:  # upscaling: INTER_AREA is bilinear there; leave to CPU
        return None
    return width, height


def area_resize(chw: torch.Tensor, size: int) -> torch.Tensor:
    """(3, H, W) uint8 -> (S, S, 3) uint8: the mean over each output pixel's footprint."""
    x = F.interpolate(chw[None].float(), size=(size, size), mode="area")
    return x[0].round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0)


def _decode_all(datas: list[bytes], device: torch.device) -> list[torch.Tensor | None]:
    """One batched decode; if it fails, each image alone (None: this one failed)."""
    tensors = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
    try:
        return list(decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device))
    except Exception:
        decoded: list[torch.Tensor | None] = []
        for tensor in tensors:
            try:
                decoded.append(decode_jpeg(tensor, mode=ImageReadMode.RGB, device=device))
            except Exception:
                decoded.append(None)
        return decoded


def prepare_jpegs(
    uploads: Sequence[tuple[bytes, str]],
    max_pixels: int,
    size: int,
    device: torch.device,
    fallback: Prepare = prepare,
) -> list[Prepared | Exception]:
    """Decode and squash every upload, in order: GPU-decodable JPEGs in one batch on `device`,
    the rest (and any the batch could not decode) by `fallback` on the CPU; a bad upload's
    error is returned in its place (an `ApiError` with its 4xx), never raised."""
    headers = [gpu_decodable(data, max_pixels, size) for data, _ in uploads]
    on_gpu = [k for k, header in enumerate(headers) if header is not None]
    results: list[Prepared | Exception | None] = [None] * len(uploads)
    if on_gpu:
        decoded = _decode_all([uploads[k][0] for k in on_gpu], device)
        kept = [(k, image) for k, image in zip(on_gpu, decoded, strict=True) if image is not None]
        if kept:
            squashed = torch.stack([area_resize(image, size) for _, image in kept]).cpu().numpy()
            for (k, image), pixels in zip(kept, squashed, strict=True):
                height, width = image.shape[1:]
                results[k] = Prepared(np.ascontiguousarray(pixels), int(width), int(height))
    for k, (data, label) in enumerate(uploads):
        if results[k] is None:
            try:
                results[k] = fallback(data, label, max_pixels, size)
            except Exception as exc:
                results[k] = exc
    return [r for r in results if r is not None]


class GpuDecodeStage:
    """Collects uploads from concurrent requests into batched GPU decodes (one worker thread).

    Its queue needs no bound of its own: every image in it holds a slot of the scoring
    batcher's admission, so at most `max_queued_images` wait here.
    """

    def __init__(
        self,
        device: torch.device,
        max_pixels: int,
        size: int,
        max_batch_size: int,
        max_wait_s: float,
        max_pending: int,
        in_pool: InPool,
    ) -> None:
        self.device = device
        self._in_pool = in_pool
        self.batcher: Batcher[tuple[bytes, str], Prepared | Exception] = Batcher(
            lambda items: prepare_jpegs(items, max_pixels, size, device),
            max_batch_size=max_batch_size,
            max_wait_s=max_wait_s,
            max_pending=max_pending,
            name=f"gpu-decode-{device}",
            close_when_idle=True,  # a lone request does not wait out max_wait_s
        )

    def start(self) -> None:
        self.batcher.start()

    def stop(self, timeout: float) -> bool:
        self.batcher.close()
        return self.batcher.stop(timeout)

    async def prepare_all(self, uploads: Sequence[tuple[bytes, str]]) -> list[tuple[str, Prepared]]:
        """(SHA-256, Prepared) per upload in order; raises the first bad upload's error."""
        with self.batcher.reserve(len(uploads)) as reservation:
            futures = reservation.submit(list(uploads))
            ids, outcomes = await asyncio.gather(
                self._in_pool(_hashes, [data for data, _ in uploads]),  # meanwhile, in the pool
                asyncio.gather(*map(asyncio.wrap_future, futures)),
            )
        prepared: list[Prepared] = []
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                raise outcome
            prepared.append(outcome)
        return list(zip(ids, prepared, strict=True))


def _hashes(datas: list[bytes]) -> list[str]:
    return [hashlib.sha256(data).hexdigest() for data in datas]
