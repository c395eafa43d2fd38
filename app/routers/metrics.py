"""GET /metrics: Prometheus text format."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.deps import MetricsDep

router = APIRouter(tags=["operations"])
METRICS_EXAMPLE = {
    "summary": "An excerpt",
    "value": (
        "# TYPE viraliency_requests_total counter\n"
        'viraliency_requests_total{method="POST",route="/score",status="200"} 1532.0\n'
        "# TYPE viraliency_queue_depth gauge\n"
        "viraliency_queue_depth 3.0\n"
    ),
}


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "content": {CONTENT_TYPE_LATEST: {"examples": {"excerpt": METRICS_EXAMPLE}}},
            "description": "Prometheus metrics.",
        }
    },
    summary="Prometheus metrics",
)
async def metrics(registry: MetricsDep) -> Response:
    """Requests and latency per route, batch sizes, queue depth, rejections by reason."""
    return Response(registry.render(), media_type=CONTENT_TYPE_LATEST)
