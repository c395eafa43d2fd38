"""Batched JPEG decoding (app/gpu_decode.py), on the CPU and, where a GPU is present, on CUDA:
torchvision's decode_jpeg does the batch on the CPU as nvJPEG does on CUDA, so the routing, the
fallbacks and the resize are real on a machine without a GPU too."""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from app.errors import ApiError
from app.gpu_decode import GpuDecodeStage, gpu_decodable, prepare_jpegs, use_gpu_decode
from app.images import Prepared, prepare

from .helpers import Serve, wait_until
from .imaging import encode, jpeg_declaring_size, photo

CPU = torch.device("cpu")
# The batched decode runs on the CPU everywhere (libjpeg-turbo inside torchvision) and on CUDA
# (nvJPEG) where a GPU is present: the same checks hold on both.
DEVICES = [CPU] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
SIZE = 224
MAX_PIXELS = 40_000_000


def jpeg_of(width: int = 640, height: int = 480, seed: int = 0, **options: Any) -> bytes:
    return encode(photo(width, height, seed), "JPEG", quality=90, **options)


def cmyk_jpeg() -> bytes:
    return encode(Image.fromarray(photo(640, 480, 3)).convert("CMYK"), "JPEG", quality=90)


def rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    return jpeg_of(seed=4, exif=exif.tobytes())


def corrupt_scan_jpeg() -> bytes:
    data = jpeg_of(seed=5)
    return data[: len(data) // 2]  # a full header, half the entropy-coded data


def close_to_cpu(prepared: Prepared, data: bytes, tolerance: float = 2.0) -> None:
    """Same size as the CPU decoder reports, pixels within `tolerance` levels on average."""
    expected = prepare(data, "x", MAX_PIXELS, SIZE)
    assert (prepared.width, prepared.height) == (expected.width, expected.height)
    assert prepared.pixels.shape == (SIZE, SIZE, 3)
    assert prepared.pixels.dtype == np.uint8
    difference = np.abs(prepared.pixels.astype(int) - expected.pixels.astype(int))
    assert difference.mean() < tolerance, difference.mean()
    assert np.percentile(difference, 99) <= 12


@pytest.fixture(params=DEVICES, ids=str)
def device(request: pytest.FixtureRequest) -> torch.device:
    return request.param


def counting(calls: list[str]) -> Callable[[bytes, str, int, int], Prepared]:
    """The real CPU decoder, recording which uploads it was given."""

    def fallback(data: bytes, label: str, max_pixels: int, size: int) -> Prepared:
        calls.append(label)
        return prepare(data, label, max_pixels, size)

    return fallback


def test_the_gpu_path_is_chosen_only_on_cuda_with_the_setting_on() -> None:
    assert use_gpu_decode(torch.device("cuda"), True)
    assert use_gpu_decode(torch.device("cuda:1"), True)
    assert not use_gpu_decode(torch.device("cuda"), False)
    assert not use_gpu_decode(CPU, True)


async def test_a_cpu_service_has_no_gpu_decode_stage_even_with_the_setting_on(
    serve: Serve,
) -> None:
    async with serve(gpu_decode=True) as (app, _):
        assert app.state.service.gpu_decode is None


def test_batched_jpegs_match_the_cpu_decoder_and_skip_the_fallback(device: torch.device) -> None:
    datas = [jpeg_of(seed=k) for k in range(3)] + [jpeg_of(1080, 1080, seed=9)]
    calls: list[str] = []
    results = prepare_jpegs(
        [(d, f"images[{k}]") for k, d in enumerate(datas)],
        MAX_PIXELS,
        SIZE,
        device,
        counting(calls),
    )
    assert calls == []
    for result, data in zip(results, datas, strict=True):
        assert isinstance(result, Prepared)
        close_to_cpu(result, data)


def test_other_formats_cmyk_rotated_and_tiny_jpegs_go_to_the_cpu_decoder(
    device: torch.device,
) -> None:
    others = {
        "png": encode(photo(640, 480, 6), "PNG"),
        "webp": encode(photo(640, 480, 7), "WEBP"),
        "cmyk": cmyk_jpeg(),
        "rotated": rotated_jpeg(),
        "tiny": jpeg_of(100, 80, seed=8),
    }
    uploads = [(jpeg_of(seed=1), "plain"), *((d, name) for name, d in others.items())]
    calls: list[str] = []
    results = prepare_jpegs(uploads, MAX_PIXELS, SIZE, device, counting(calls))
    assert calls == list(others)
    for (data, _), result in zip(uploads[1:], results[1:], strict=True):
        expected = prepare(data, "x", MAX_PIXELS, SIZE)
        assert isinstance(result, Prepared)
        assert np.array_equal(result.pixels, expected.pixels)
    rotated = results[4]
    assert isinstance(rotated, Prepared)
    assert (rotated.width, rotated.height) == (480, 640)


def test_a_progressive_jpeg_decodes_in_the_batch(device: torch.device) -> None:
    data = jpeg_of(seed=10, progressive=True)
    assert Image.open(io.BytesIO(data)).info.get("progressive")
    calls: list[str] = []
    [result] = prepare_jpegs([(data, "p")], MAX_PIXELS, SIZE, device, counting(calls))
    assert calls == []
    assert isinstance(result, Prepared)
    close_to_cpu(result, data)


def test_only_a_jpeg_that_ends_at_its_end_of_image_marker_takes_the_batch_road() -> None:
    """nvJPEG decodes a cut-off JPEG without complaint (grey where the data stops), so the
    header check sends it, and anything after the marker, to the CPU decoder."""
    whole = jpeg_of(seed=13)
    assert gpu_decodable(whole, MAX_PIXELS, SIZE) == (640, 480)
    assert gpu_decodable(whole + b"\0\0", MAX_PIXELS, SIZE) == (640, 480)  # zero padding
    assert gpu_decodable(corrupt_scan_jpeg(), MAX_PIXELS, SIZE) is None
    assert gpu_decodable(whole[:-2], MAX_PIXELS, SIZE) is None
    assert gpu_decodable(whole + b"trailer", MAX_PIXELS, SIZE) is None


def test_a_corrupt_jpeg_fails_alone_with_its_4xx_and_the_rest_of_the_batch_decodes(
    device: torch.device,
) -> None:
    good = [jpeg_of(seed=11), jpeg_of(seed=12)]
    uploads = [(good[0], "images[0]"), (corrupt_scan_jpeg(), "images[1]"), (good[1], "images[2]")]
    calls: list[str] = []
    first, bad, last = prepare_jpegs(uploads, MAX_PIXELS, SIZE, device, counting(calls))
    assert calls == ["images[1]"]  # only the bad one goes to the CPU decoder
    assert isinstance(bad, ApiError)
    assert (bad.status, bad.code) == (400, "corrupt_image")
    assert "images[1]" in bad.message
    for result, data in ((first, good[0]), (last, good[1])):
        assert isinstance(result, Prepared)
        close_to_cpu(result, data)


def test_a_jpeg_over_the_pixel_limit_gets_the_cpu_decoders_413(device: torch.device) -> None:
    [result] = prepare_jpegs(
        [(jpeg_declaring_size(20_000, 20_000), "big")], MAX_PIXELS, SIZE, device
    )
    assert isinstance(result, ApiError)
    assert (result.status, result.code) == (413, "too_many_pixels")


async def in_pool(fn: Callable[[list[bytes]], list[str]], datas: list[bytes]) -> list[str]:
    return await asyncio.to_thread(fn, datas)


@pytest.fixture
def stage(device: torch.device) -> Any:
    stage = GpuDecodeStage(device, MAX_PIXELS, SIZE, 8, 0.002, 64, in_pool)
    stage.start()
    yield stage
    assert stage.stop(5.0)


async def test_the_stage_batches_requests_and_returns_ids_and_pixels(stage: Any) -> None:
    requests = [[jpeg_of(seed=20 + k)] for k in range(6)] + [[encode(photo(300, 200, 9), "PNG")]]
    answers = await asyncio.gather(
        *(stage.prepare_all([(d, "images[0]") for d in datas]) for datas in requests)
    )
    for datas, answer in zip(requests, answers, strict=True):
        [(image_id, prepared)] = answer
        assert image_id == hashlib.sha256(datas[0]).hexdigest()
        close_to_cpu(prepared, datas[0])
    await wait_until(lambda: stage.batcher.pending == 0)


async def test_the_stage_raises_the_first_bad_uploads_error(stage: Any) -> None:
    uploads = [(jpeg_of(seed=30), "images[0]"), (b"not an image", "images[1]")]
    with pytest.raises(ApiError) as caught:
        await stage.prepare_all(uploads)
    assert caught.value.status == 415
    assert "images[1]" in caught.value.message
    await wait_until(lambda: stage.batcher.pending == 0)  # both slots given back
