"""POST /compare: which of two images is more viral, eq. (1)'s pairwise probability."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, File, Request, UploadFile

from app.deps import AdmissionDep, PlatformDep
from app.routers.entries import score_entry
from app.schemas import CompareResponse, error_responses, upload_body
from app.uploads import UploadRoute, read_upload

router = APIRouter(tags=["scoring"], route_class=UploadRoute)


def sigmoid(x: float) -> float:
    """1 / (1 + e^-x) without overflow for large |x|."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


@router.post(
    "/compare",
    responses=error_responses(400, 408, 413, 415, 422, 503, 504),
    summary="Compare two images",
    openapi_extra=upload_body("/compare", {"image_a": "cat.jpg", "image_b": "beach.png"}),
)
async def compare(
    image_a: Annotated[UploadFile, File(description="The first image.")],
    image_b: Annotated[UploadFile, File(description="The second image.")],
    admission: AdmissionDep,
    request: Request,
    platform: PlatformDep,
) -> CompareResponse:
    """probability_a_more_viral = sigmoid(s(a) - s(b)); both images go through one batch."""
    uploads = [
        await read_upload(image_a, "image_a", admission.settings),
        await read_upload(image_b, "image_b", admission.settings),
    ]
    a, b = await admission.score(uploads, platform=platform)
    return CompareResponse(
        probability_a_more_viral=sigmoid(a.score - b.score),
        winner="a" if a.score >= b.score else "b",
        a=score_entry(request, a),
        b=score_entry(request, b),
    )
