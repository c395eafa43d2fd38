"""Overload through the real app: deadline-aware admission, the upload byte budget, the body
timeout, clients that go away, and slots free for the next request as soon as one is answered."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI

from .helpers import Serve, on_both_archs, sample, wait_until
from .imaging import jpeg, multipart

BOUNDARY = "viraliency-overload-boundary"
HEADERS = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}


def multipart_body(data: bytes, field: str = "images") -> bytes:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field}"; filename="a.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{BOUNDARY}--\r\n".encode()


async def paused_after(first: bytes, rest: bytes, go_on: asyncio.Event) -> AsyncIterator[bytes]:
    """A body that sends `first`, then waits for `go_on` before sending `rest`."""
    yield first
    await go_on.wait()
    yield rest


def held(app: FastAPI) -> tuple[int, int]:
    """(queue slots, upload bytes) held by admitted requests."""
    service = app.state.service
    return service.batcher.pending, service.upload_bytes.held


@on_both_archs
async def test_sequential_requests_with_a_queue_of_one_are_all_admitted(serve: Serve) -> None:
    """Review defect: the slot went back only after the answer, so 9 of 60 got 503."""
    async with serve(max_queued_images=1, max_images_per_request=1) as (_, client):
        codes = []
        for i in range(60):
            response = await client.post("/score", files=multipart(jpeg(seed=i % 3)))
            codes.append(response.status_code)
    assert codes == [200] * 60


@on_both_archs
async def test_work_that_would_miss_the_deadline_is_refused_at_once(serve: Serve) -> None:
    """With more images ahead than the live rate scores within the admission limit, a request
    is told 503 queue_full at once, with the estimated wait and a Retry-After from it."""
    async with serve(request_deadline_s=2.0, max_queued_images=100_000) as (app, client):
        service = app.state.service
        limit = service.settings.admission_limit_s
        assert limit == 1.0  # (1 - 0.5) x 2 s
        assert (await client.post("/score", files=multipart(jpeg()))).status_code == 200
        assert service.rate.batches == 1  # measured: past the slow start
        ahead = math.ceil(limit * service.rate.images_per_s) + 1
        with service.batcher.reserve(ahead):  # admitted images that are still decoding
            started = time.monotonic()
            refused = await client.post("/score", files=multipart(jpeg()))
            elapsed = time.monotonic() - started
            text = (await client.get("/metrics")).text
        assert elapsed < 0.5
        assert refused.status_code == 503
        error = refused.json()["error"]
        assert error["code"] == "queue_full"
        assert "estimated wait" in error["message"]
        assert "deadline of 2 s" in error["message"]
        wait = float(error["message"].split("estimated wait ")[1].split(" s")[0])
        assert wait >= (ahead + 1) / service.rate.images_per_s - 0.01  # (rounded to 0.01 s)
        assert int(refused.headers["retry-after"]) == max(1, math.ceil(wait - limit))
        assert sample(text, "viraliency_estimated_wait_seconds") > limit
        assert sample(text, "viraliency_service_rate_images_per_second") > 0
        assert sample(text, "viraliency_admission_limit_seconds") == limit
        assert held(app) == (0, 0)
        assert (await client.post("/score", files=multipart(jpeg()))).status_code == 200


@on_both_archs
async def test_upload_bytes_past_the_budget_are_refused_and_given_back(serve: Serve) -> None:
    async with serve(max_upload_bytes=40_000, max_queued_bytes=60_000) as (app, client):
        go_on = asyncio.Event()
        first = multipart_body(b"\xff" * 39_000)
        holding = asyncio.create_task(
            client.post("/score", content=paused_after(first[:35_000], first[35_000:], go_on),
                        headers=HEADERS)
        )  # fmt: skip
        await wait_until(lambda: held(app) == (1, 35_000))
        refused = await client.post("/score", files=multipart(b"\xff" * 30_000))
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "queue_full"
        assert "budget of 60000" in refused.json()["error"]["message"]
        go_on.set()
        assert (await holding).status_code == 415  # not an image, but read to the end
        assert held(app) == (0, 0)
        text = (await client.get("/metrics")).text
        assert sample(text, "viraliency_queued_upload_bytes") == 0


@on_both_archs
async def test_a_trickling_upload_is_cut_off_with_408_and_its_slots_freed(serve: Serve) -> None:
    async with serve(body_timeout_s=0.3) as (app, client):
        body = multipart_body(jpeg())
        never = asyncio.Event()
        started = time.monotonic()
        response = await client.post(
            "/score", content=paused_after(body[:100], body[100:], never), headers=HEADERS
        )
        assert time.monotonic() - started < 2.0
        assert response.status_code == 408
        assert response.json()["error"]["code"] == "body_timeout"
        assert held(app) == (0, 0)
        assert (await client.post("/score", files=multipart(jpeg()))).status_code == 200


async def test_a_client_gone_mid_upload_is_a_disconnect_not_a_client_error(serve: Serve) -> None:
    """Review defect: it was logged and counted as a 400 malformed_body."""
    async with serve() as (app, client):
        messages: list[dict[str, Any]] = [
            {"type": "http.request", "body": multipart_body(jpeg())[:500], "more_body": True},
            {"type": "http.disconnect"},
        ]

        async def receive() -> dict[str, Any]:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            pass  # nobody is listening any more

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/score",
            "raw_path": b"/score",
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"test"),
                *((k.encode(), v.encode()) for k, v in HEADERS.items()),
            ],
            "client": ("127.0.0.1", 1),
            "server": ("test", 80),
        }
        await client._transport.app(scope, receive, send)  # type: ignore[attr-defined]
        text = (await client.get("/metrics")).text
        assert sample(text, "viraliency_rejections_total", reason="malformed_body") == 0
        assert sample(text, "viraliency_client_disconnects_total") == 1
        assert held(app) == (0, 0)
