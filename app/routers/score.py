"""POST /score and POST /rank: one or more uploads in the field `images`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Request, UploadFile

from app.deps import AdmissionDep, PlatformDep
from app.routers.entries import score_entry
from app.schemas import RankedEntry, RankResponse, ScoreResponse, error_responses, upload_body
from app.service import Admission, Scored
from app.uploads import UploadRoute, read_uploads

router = APIRouter(tags=["scoring"], route_class=UploadRoute)

Images = Annotated[
    list[UploadFile],
    File(description="One or more images (JPEG, PNG, WebP, BMP, TIFF, GIF), repeated field."),
]
ERRORS = error_responses(400, 408, 413, 415, 422, 503, 504)


async def score_images(
    images: list[UploadFile], admission: Admission, platform: str | None
) -> list[Scored]:
    """Read the field's files, then score them, in order (kept for /heatmap)."""
    uploads = await read_uploads(images, "images", admission.settings)
    return await admission.score(uploads, platform=platform)


@router.post(
    "/score",
    responses=ERRORS,
    summary="Score images for virality",
    openapi_extra=upload_body("/score", {"images": ["cat.jpg", "beach.png"]}),
)
async def score(
    images: Images, admission: AdmissionDep, request: Request, platform: PlatformDep
) -> ScoreResponse:
    """Per image, in upload order: its id (SHA-256 of the bytes), the raw score s(I), its
    percentile among the checkpoint's calibration images and the URL of its heatmap."""
    results = await score_images(images, admission, platform)
    return ScoreResponse(results=[score_entry(request, r) for r in results])


@router.post(
    "/rank",
    responses=ERRORS,
    summary="Order images from most to least viral",
    openapi_extra=upload_body("/rank", {"images": ["cat.jpg", "beach.png", "dog.webp"]}),
)
async def rank(
    images: Images, admission: AdmissionDep, request: Request, platform: PlatformDep
) -> RankResponse:
    """The uploads sorted by score, highest first (ties keep upload order)."""
    results = await score_images(images, admission, platform)
    order = sorted(range(len(results)), key=lambda i: -results[i].score)
    ranking = [
        RankedEntry(**score_entry(request, results[i]).model_dump(), rank=position, index=i)
        for position, i in enumerate(order, start=1)
    ]
    return RankResponse(ranking=ranking)
