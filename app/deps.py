"""Dependencies as `Annotated` aliases, so route signatures stay one line each.

Every dependency is an `async def`, though none awaits: FastAPI runs a plain `def` dependency
on its thread pool, two thread hops per dependency and request (seen in py-spy on /score; the
latency gain was too small to measure on 2 cores, bench/RESULTS.md). They must never block.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request

from app.errors import ApiError
from app.metrics import Metrics
from app.service import Admission, Service
from app.settings import Settings
from app.uploads import ADMISSION


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


def loaded_service(request: Request) -> Service:
    """The app's service; 503 not_ready while the model is loading."""
    service: Service | None = request.app.state.service
    if service is None:
        settings: Settings = request.app.state.settings
        retry = str(settings.retry_after_s)
        raise ApiError(
            503,
            "not_ready",
            "the model is not loaded yet; retry shortly",
            headers={"Retry-After": retry},
        )
    return service


async def get_service(request: Request) -> Service:
    return loaded_service(request)


async def get_admission(request: Request) -> Admission:
    """The request's admission, made by `app.uploads.UploadRoute` before its body was read."""
    admission: Admission | None = request.scope.get(ADMISSION)
    if admission is None:
        loaded_service(request)  # 503 not_ready: the only way an upload route has none
        raise RuntimeError("an upload route without an admission: is its route_class UploadRoute?")
    return admission


async def get_platform(
    request: Request,
    platform: Annotated[
        str | None,
        Query(
            description="Score with this platform's own head (a checkpoint with per-platform "
            "heads: GET /model lists them in checkpoint.network.platforms); 'auto' or left out: "
            "the gate's guess of the platform mixes them.",
            examples=["instagram"],
        ),
    ] = None,
) -> str | None:
    """The platform whose head scores the request's images; None for the default."""
    info = loaded_service(request).engine.info
    try:
        return info.resolve_platform(platform)
    except ValueError as exc:
        raise ApiError(422, "unknown_platform", str(exc), accepted=info.platform_choices) from None


SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
ServiceDep = Annotated[Service, Depends(get_service)]
AdmissionDep = Annotated[Admission, Depends(get_admission)]
PlatformDep = Annotated[str | None, Depends(get_platform)]
