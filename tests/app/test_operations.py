"""Operations: health, readiness, metrics, /model, OpenAPI, overload, deadlines, shutdown."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi.routing import iter_route_contexts

from app.main import create_app
from app.settings import Settings

from .helpers import TRAINING, Serve, batches, full_queue, on_both_archs, sample, wait_until
from .imaging import jpeg, multipart


@on_both_archs
async def test_healthz_and_readyz_when_running(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert ready.json()["device"] == "cpu"


async def test_before_startup_only_healthz_answers_200(
    settings_for: Callable[..., Settings],
) -> None:
    app = create_app(settings_for())  # lifespan not run: the model is not loaded
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
        assert (ready.status_code, ready.json()["error"]["code"]) == (503, "not_ready")
        scored = await client.post("/score", files=multipart(jpeg()))
        assert (scored.status_code, scored.json()["error"]["code"]) == (503, "not_ready")
        assert "retry-after" in scored.headers


async def test_a_broken_checkpoint_fails_startup_with_a_clear_message(
    settings_for: Callable[..., Settings], tmp_path: Path
) -> None:
    app = create_app(settings_for(checkpoint=tmp_path))
    with pytest.raises(Exception, match=r"config\.json"):
        async with LifespanManager(app):
            pass


async def test_model_describes_the_checkpoint(client: httpx.AsyncClient) -> None:
    body = (await client.get("/model")).json()
    assert body["device"] == "cpu"
    checkpoint = body["checkpoint"]
    assert checkpoint["network"]["backbone"] == "tiny"
    assert checkpoint["network"]["pooling"] == "lena"
    assert {"mean", "min", "max", "histogram"} <= checkpoint["eta"].keys()
    assert checkpoint["training"] == TRAINING
    assert len(checkpoint["calibration"]["quantiles"]) == 101


@on_both_archs
async def test_metrics_count_requests_by_route_and_rejections_by_reason(
    client: httpx.AsyncClient,
) -> None:
    await client.post("/score", files=multipart(jpeg()))
    await client.post("/score", files=multipart(b"no image"))
    await client.get("/heatmap", params={"image_id": "0" * 64})
    text = (await client.get("/metrics")).text
    assert sample(text, "viraliency_requests_total", route="/score", status="200") == 1
    assert sample(text, "viraliency_requests_total", route="/score", status="415") == 1
    assert sample(text, "viraliency_request_duration_seconds_count", route="/score") == 2
    assert sample(text, "viraliency_rejections_total", reason="unsupported_format") == 1
    assert sample(text, "viraliency_rejections_total", reason="unknown_image_id") == 1
    assert sample(text, "viraliency_batch_size_sum") == 1
    assert sample(text, "viraliency_queue_depth") == 0
    assert sample(text, "viraliency_heatmap_store_items") == 1


def schema_has_examples(schema: dict[str, Any], components: dict[str, Any]) -> bool:
    """The schema, or every property down to the leaves, carries an example."""
    if schema.get("examples") or "example" in schema:
        return True
    if "$ref" in schema:
        return schema_has_examples(components[schema["$ref"].rsplit("/", 1)[-1]], components)
    if "allOf" in schema:
        return all(schema_has_examples(s, components) for s in schema["allOf"])
    if "items" in schema:
        return schema_has_examples(schema["items"], components)
    properties = schema.get("properties")
    return bool(properties) and all(schema_has_examples(p, components) for p in properties.values())


def media_has_examples(media: dict[str, Any], components: dict[str, Any]) -> bool:
    if media.get("examples") or "example" in media:
        return True
    return schema_has_examples(media.get("schema", {}), components)


def missing_examples(spec: dict[str, Any]) -> list[str]:
    """Every parameter, request body and 200 response of every operation without an example."""
    components = spec["components"]["schemas"]
    missing = []
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            where = f"{method.upper()} {path}"
            for param in operation.get("parameters", []):
                if not (
                    param.get("examples")
                    or "example" in param
                    or schema_has_examples(param["schema"], components)
                ):
                    missing.append(f"{where}: parameter {param['name']}")
            body = operation.get("requestBody", {}).get("content", {})
            for media_type, media in body.items():
                if not media_has_examples(media, components):
                    missing.append(f"{where}: request body {media_type}")
            ok = operation["responses"].get("200", {}).get("content", {})
            if not ok:
                missing.append(f"{where}: 200 response has no content")
            for media_type, media in ok.items():
                if not media_has_examples(media, components):
                    missing.append(f"{where}: 200 response {media_type}")
    return missing


async def test_openapi_documents_every_route_with_examples(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    routes = {(path, method) for path, item in spec["paths"].items() for method in item}
    expected = {
        ("/score", "post"), ("/compare", "post"), ("/rank", "post"), ("/heatmap", "get"),
        ("/heatmap", "post"), ("/regions", "get"), ("/regions", "post"), ("/healthz", "get"),
        ("/readyz", "get"), ("/metrics", "get"), ("/model", "get"),
    }  # fmt: skip
    assert expected <= routes
    for path, method in expected:
        operation = spec["paths"][path][method]
        assert operation.get("summary"), (path, method)
        assert operation.get("description"), (path, method)
    assert missing_examples(spec) == []
    entry = spec["components"]["schemas"]["ScoreEntry"]["properties"]
    for field in ("image_id", "score", "percentile", "heatmap_url"):
        assert entry[field]["description"]
        assert entry[field]["examples"]


def test_the_examples_check_finds_a_missing_example() -> None:
    components = {"Box": {"properties": {"x": {"type": "integer", "examples": [1]}}}}
    spec: dict[str, Any] = {
        "components": {"schemas": components},
        "paths": {
            "/a": {
                "get": {
                    "parameters": [{"name": "q", "schema": {"type": "string"}}],
                    "responses": {"200": {"content": {"image/png": {}}}},
                },
                "post": {
                    "requestBody": {"content": {"multipart/form-data": {"schema": {}}}},
                    "responses": {
                        "200": {"content": {"application/json": {"schema": {"$ref": "#/x/Box"}}}}
                    },
                },
            }
        },
    }
    assert missing_examples(spec) == [
        "GET /a: parameter q",
        "GET /a: 200 response image/png",
        "POST /a: request body multipart/form-data",
    ]


@on_both_archs
async def test_a_full_queue_answers_503_with_retry_after_at_once(serve: Serve) -> None:
    async with full_queue(serve) as (_, client, waiting):
        started = time.monotonic()
        refused = await client.post("/score", files=multipart(jpeg(seed=3)))
        assert time.monotonic() - started < 0.5  # at once: well before the batch closes
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "queue_full"
        assert int(refused.headers["retry-after"]) >= 0
        assert (await waiting).status_code == 200


@on_both_archs
async def test_a_request_past_its_deadline_answers_504(serve: Serve) -> None:
    async with serve(
        request_deadline_s=0.05, max_wait_ms=600.0, batch_close_when_idle=False, max_batch_size=8
    ) as (app, client):
        started = time.monotonic()
        response = await client.post("/score", files=multipart(jpeg()))
        assert time.monotonic() - started < 0.5  # well before the batch closes
        assert response.status_code == 504
        assert response.json()["error"]["code"] == "deadline_exceeded"
        await wait_until(lambda: app.state.service.batcher.pending == 0)
        assert batches(app) == (0, 0)  # skipped, not run


@on_both_archs
async def test_shutdown_finishes_accepted_requests_and_refuses_new_ones(
    settings_for: Callable[..., Settings],
) -> None:
    app = create_app(settings_for(max_wait_ms=300.0, batch_close_when_idle=False, max_batch_size=8))
    manager = LifespanManager(app)
    await manager.__aenter__()
    transport = httpx.ASGITransport(app=manager.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        accepted = [
            asyncio.create_task(client.post("/score", files=multipart(jpeg(seed=s))))
            for s in range(3)
        ]
        service = app.state.service
        await wait_until(lambda: service.batcher.pending == 3)
        shutdown = asyncio.create_task(manager.__aexit__(None, None, None))
        await wait_until(lambda: not service.batcher.accepting)
        late = await client.post("/score", files=multipart(jpeg(seed=9)))
        assert (late.status_code, late.json()["error"]["code"]) == (503, "shutting_down")
        assert (await client.get("/readyz")).status_code == 503
        assert not shutdown.done()  # still draining the accepted images
        responses = await asyncio.gather(*accepted)
        assert [r.status_code for r in responses] == [200, 200, 200]
        await shutdown
    assert service.batcher.pending == 0
    assert batches(app) == (1, 3)


async def test_an_unexpected_error_is_a_plain_500(settings_for: Callable[..., Settings]) -> None:
    app = create_app(settings_for())

    async def broken() -> None:
        raise RuntimeError("secret internal detail")

    app.add_api_route("/broken", broken)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get("/broken")
            assert response.status_code == 500
            assert response.json()["error"]["code"] == "internal_error"
            assert "secret" not in response.text
            assert (await client.get("/healthz")).status_code == 200


async def test_unknown_routes_answer_in_the_error_shape(client: httpx.AsyncClient) -> None:
    response = await client.get("/nowhere")
    assert (response.status_code, response.json()["error"]["code"]) == (404, "not_found")
    response = await client.get("/score")
    assert (response.status_code, response.json()["error"]["code"]) == (405, "method_not_allowed")


def test_settings_come_from_viraliency_environment_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VIRALIENCY_MAX_BATCH_SIZE", "17")
    monkeypatch.setenv("VIRALIENCY_DEVICE", "cuda:1")
    monkeypatch.setenv("VIRALIENCY_CHECKPOINT", "/tmp/ckpt")
    settings = Settings()
    assert (settings.max_batch_size, settings.device) == (17, "cuda:1")
    assert settings.checkpoint == Path("/tmp/ckpt")
    monkeypatch.setenv("VIRALIENCY_DEVICE", "tpu")
    with pytest.raises(ValueError, match="device"):
        Settings()


@on_both_archs
async def test_every_error_has_one_shape_422_included(client: httpx.AsyncClient) -> None:
    """Review defect: 422 answers lacked the `accepted` key the other errors have."""
    misnamed = await client.post("/score", files={"image": ("a.jpg", jpeg())})
    bad_query = await client.get("/heatmap", params={"image_id": "not-hex"})
    unknown = await client.get("/heatmap", params={"image_id": "0" * 64})
    not_image = await client.post("/score", files=multipart(b"no image"))
    for response in (misnamed, bad_query, unknown, not_image):
        assert set(response.json()) == {"error"}
        assert set(response.json()["error"]) == {"code", "message", "accepted"}, response.text
    assert (misnamed.status_code, bad_query.status_code) == (422, 422)
    assert "images" in misnamed.json()["error"]["message"]
    assert "JPEG" in misnamed.json()["error"]["accepted"]  # a route that takes uploads
    assert bad_query.json()["error"]["accepted"] is None


def sync_calls(dependant: Any) -> list[str]:
    """Names of the plain `def` callables in a route's dependency tree (endpoint included)."""
    found = []
    call = dependant.call
    if call is not None:
        target = call if inspect.isfunction(call) or inspect.ismethod(call) else call.__call__
        if not inspect.iscoroutinefunction(target):
            found.append(getattr(call, "__qualname__", repr(call)))
    for sub in dependant.dependencies:
        found.extend(sync_calls(sub))
    return found


def test_no_route_runs_a_dependency_on_the_thread_pool(
    settings_for: Callable[..., Settings],
) -> None:
    """FastAPI hops to its thread pool and back for each plain `def` endpoint or dependency on
    every request (app/deps.py)."""
    app = create_app(settings_for())
    # FastAPI 0.165 (pinned) nests included routers; this is how its own OpenAPI walks them.
    routes = [route for route in iter_route_contexts(app.routes) if hasattr(route, "dependant")]
    assert {"/score", "/compare", "/heatmap"} <= {route.path for route in routes}
    offenders = {route.path: sync_calls(route.dependant) for route in routes}
    assert {path: calls for path, calls in offenders.items() if calls} == {}
