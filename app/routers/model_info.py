"""GET /model: what is being served."""

from __future__ import annotations

from fastapi import APIRouter

from app.deps import ServiceDep
from app.schemas import ModelResponse, error_responses

router = APIRouter(tags=["operations"])


@router.get("/model", responses=error_responses(503), summary="The served checkpoint")
async def model_info(service: ServiceDep) -> ModelResponse:
    """Backbone, pooling, eta summary, calibration, training data and licence, metrics."""
    return ModelResponse(device=str(service.engine.device), checkpoint=service.engine.description)
