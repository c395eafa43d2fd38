"""GET /healthz (the process answers) and GET /readyz (model loaded, warm and admitting)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.errors import ApiError
from app.schemas import HealthResponse, ReadyResponse, error_responses

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness")
async def healthz() -> HealthResponse:
    """200 while the process can answer at all."""
    return HealthResponse(status="ok")


@router.get("/readyz", responses=error_responses(503), summary="Readiness")
async def readyz(request: Request) -> ReadyResponse:
    """200 once the model is loaded and warmed up; 503 before that and while shutting down.
    The heatmap store's state is reported; a shared store that is down does not fail it."""
    service = request.app.state.service
    if service is None or not service.ready or not service.batcher.accepting:
        state = "shutting down" if service is not None else "loading"
        raise ApiError(503, "not_ready", f"the service is not ready ({state})")
    return ReadyResponse(
        status="ready",
        device=str(service.engine.device),
        queued_images=service.batcher.pending,
        heatmap_store=await service.store.state(),  # reported, never a reason to be unready
    )
