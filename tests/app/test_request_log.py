"""The per-request log line: structured, at debug only (at info it is not even built)."""

from __future__ import annotations

import logging

import pytest

from .helpers import Serve
from .imaging import jpeg, multipart


def request_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == "request"]


async def test_each_request_is_logged_with_its_route_status_and_time_at_debug(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="app.middleware")
    async with serve() as (_, client):
        assert (await client.post("/score", files=multipart(jpeg(seed=3)))).status_code == 200
        assert (await client.get("/heatmap", params={"image_id": "0" * 64})).status_code == 404
    lines = request_lines(caplog)
    assert [(r.route, r.method, r.status) for r in lines] == [  # type: ignore[attr-defined]
        ("/score", "POST", 200),
        ("/heatmap", "GET", 404),
    ]
    assert all(r.levelno == logging.DEBUG and r.ms > 0 for r in lines)  # type: ignore[attr-defined]


async def test_at_info_no_per_request_line_is_logged_but_refusals_are(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with serve() as (_, client):
        assert (await client.post("/score", files=multipart(jpeg(seed=3)))).status_code == 200
        refused = await client.post("/score", files=multipart(b"not an image"))
        assert refused.status_code == 415
    assert request_lines(caplog) == []
    assert [getattr(r, "reason", None) for r in caplog.records if r.msg == "request refused"] == [
        "unsupported_format"
    ]
