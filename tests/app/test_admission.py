"""Admission before reading: queue room, body size per route and as it streams, file counts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from app.settings import Settings

from .helpers import Serve, full_queue, on_both_archs, wait_until
from .imaging import jpeg, multipart

BOUNDARY = "viraliency-test-boundary"


def error_of(response: httpx.Response) -> tuple[int, str]:
    assert response.headers["content-type"] == "application/json", response.text
    return response.status_code, response.json()["error"]["code"]


class StreamedBody:
    """A multipart body sent in chunks with no Content-Length (chunked transfer encoding);
    `chunks_read` counts how many chunks the server pulled."""

    def __init__(self, field: str, size: int, chunk: int = 16 * 1024) -> None:
        head = (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field}"; '
            'filename="big.bin"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        tail = f"\r\n--{BOUNDARY}--\r\n".encode()
        data = head + b"\xff" * size + tail
        self.chunks = [data[i : i + chunk] for i in range(0, len(data), chunk)]
        self.chunks_read = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            self.chunks_read += 1
            yield chunk


async def post_streamed(client: httpx.AsyncClient, path: str, body: StreamedBody) -> httpx.Response:
    headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
    request = client.build_request("POST", path, content=body.__aiter__(), headers=headers)
    assert "content-length" not in request.headers
    return await client.send(request)


@on_both_archs
async def test_a_full_queue_answers_503_without_reading_the_body(serve: Serve) -> None:
    async with full_queue(serve) as (_, client, waiting):
        for path, field in [("/score", "images"), ("/compare", "image_a"), ("/heatmap", "image")]:
            body = StreamedBody(field, 200_000)
            refused = await post_streamed(client, path, body)
            assert error_of(refused) == (503, "queue_full"), path
            assert "retry-after" in refused.headers
            assert body.chunks_read == 0, path
        assert (await waiting).status_code == 200


async def test_slots_are_reserved_before_the_files_are_read(serve: Serve) -> None:
    small = jpeg(32, 32)
    oversize = jpeg(300, 200, seed=3)
    async with serve(
        max_queued_images=3,
        max_images_per_request=3,
        max_upload_bytes=len(small) + 10,
        max_wait_ms=600.0,
        batch_close_when_idle=False,
        max_batch_size=8,
    ) as (app, client):
        assert len(oversize) > len(small) + 10
        waiting = asyncio.create_task(client.post("/score", files=multipart(small, small)))
        await wait_until(lambda: app.state.service.batcher.pending == 2)
        # One slot is left: two files are refused for room before the oversize one is read...
        two = await client.post("/score", files=multipart(small, oversize))
        assert error_of(two) == (503, "queue_full")
        # ...while one file gets its slot, is read, and is refused for its own size.
        one = await client.post("/score", files=multipart(oversize))
        assert error_of(one) == (413, "file_too_large")
        assert app.state.service.batcher.pending == 2  # the refused request's slot came back
        assert (await waiting).status_code == 200
        assert app.state.service.batcher.pending == 0


async def test_the_body_limit_counts_the_routes_own_files(serve: Serve) -> None:
    part = b"\x00" * 80_000  # not an image: past the size checks it is a 415
    async with serve(max_upload_bytes=40_000, max_images_per_request=8) as (_, client):
        # 160 kB is more than two files' worth (2 x 40 kB + 64 kB of multipart overhead)...
        compared = await client.post(
            "/compare", files={"image_a": ("a.bin", part), "image_b": ("b.bin", part)}
        )
        assert error_of(compared) == (413, "request_too_large")
        assert "2 images" in compared.json()["error"]["message"]
        posted = await client.post("/heatmap", files={"image": ("a.bin", part + part)})
        assert error_of(posted) == (413, "request_too_large")
        # ...but within eight files' worth, so /score reads 120 kB as four small files.
        halves = [part[:30_000]] * 4
        scored = await client.post("/score", files=multipart(*halves))
        assert error_of(scored) == (415, "unsupported_format")


async def test_a_chunked_body_is_refused_once_over_the_limit(serve: Serve) -> None:
    async with serve(max_upload_bytes=50_000, max_images_per_request=2) as (_, client):
        body = StreamedBody("images", 2_000_000)  # no Content-Length to check up front
        refused = await post_streamed(client, "/score", body)
        assert error_of(refused) == (413, "request_too_large")
        limit_in_chunks = (2 * 50_000 + 64 * 1024) // (16 * 1024) + 1
        assert body.chunks_read <= limit_in_chunks + 1 < len(body.chunks)
        # A chunked body within the limit is read as usual.
        fits = await post_streamed(client, "/score", StreamedBody("images", 1000))
        assert error_of(fits) == (415, "unsupported_format")


async def test_a_single_file_field_sent_twice_is_400(client: httpx.AsyncClient) -> None:
    files: Any = [
        ("image_a", ("a1.jpg", jpeg(seed=1))),
        ("image_a", ("a2.jpg", jpeg(seed=2))),
        ("image_b", ("b.jpg", jpeg(seed=3))),
    ]
    response = await client.post("/compare", files=files)
    assert error_of(response) == (400, "repeated_field")
    assert "'image_a'" in response.json()["error"]["message"]


def test_a_request_larger_than_the_queue_is_a_settings_error(
    settings_for: Callable[..., Settings],
) -> None:
    with pytest.raises(ValueError, match=r"max_images_per_request \(8\).*max_queued_images \(4\)"):
        settings_for(max_images_per_request=8, max_queued_images=4)
    assert settings_for(max_images_per_request=4, max_queued_images=4).max_queued_images == 4


def test_drawings_may_not_take_every_decoding_thread(
    settings_for: Callable[..., Settings],
) -> None:
    with pytest.raises(ValueError, match=r"max_concurrent_renders \(4\) must be below"):
        settings_for(decode_threads=4, max_concurrent_renders=4)
    assert settings_for(decode_threads=4).max_concurrent_renders == 3
    assert settings_for(decode_threads=1).max_concurrent_renders == 1  # one thread: shared
