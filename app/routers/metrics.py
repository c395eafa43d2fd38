"""GET /metrics: Prometheus text format."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.deps import MetricsDep

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus metrics."}},
    summary="Prometheus metrics",
)
async def metrics(registry: MetricsDep) -> Response:
    """Requests and latency per route, batch sizes, queue depth, rejections by reason."""
    return Response(registry.render(), media_type=CONTENT_TYPE_LATEST)
