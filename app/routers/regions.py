"""GET /regions (by id) and POST /regions (one upload): virally salient regions as boxes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Query, UploadFile

from app.deps import AdmissionDep, PlatformDep, ServiceDep
from app.regions import salient_regions, stored_crop_regions
from app.routers.heatmap import ImageId, stored_or_404
from app.schemas import RegionBox, RegionsResponse, error_responses, upload_body
from app.store import StoredImage
from app.uploads import UploadRoute, read_upload

router = APIRouter(tags=["explanation"], route_class=UploadRoute)

Threshold = Annotated[
    float,
    Query(
        gt=0.0,
        le=1.0,
        description="Keep pixels whose map value is at least this fraction of the maximum "
        "(the CAM paper uses 0.2).",
        examples=[0.3],
    ),
]
MaxRegions = Annotated[int, Query(ge=1, le=100, description="Most boxes to return.", examples=[5])]


async def _regions(
    service: ServiceDep, image_id: str, stored: StoredImage, threshold: float, limit: int
) -> RegionsResponse:
    if service.engine.localises:  # ViralNet: its spatial transformers' crops, one per level
        crops = await service.render(
            stored_crop_regions, service.engine, stored, service.settings.max_pixels
        )
        found = crops[:limit]
    else:
        found = await service.render(
            salient_regions, stored.viraliency, stored.width, stored.height, threshold, limit
        )
    return RegionsResponse(
        image_id=image_id,
        width=stored.width,
        height=stored.height,
        threshold=threshold,
        regions=[RegionBox(**vars(region)) for region in found],
    )


@router.get(
    "/regions", responses=error_responses(404, 422, 503, 504), summary="Salient regions by id"
)
async def get_regions(
    image_id: ImageId, service: ServiceDep, threshold: Threshold = 0.2, max_regions: MaxRegions = 10
) -> RegionsResponse:
    """Boxes around the parts of a recently scored image's map above threshold x its maximum."""
    stored = await stored_or_404(service, image_id)
    return await _regions(service, image_id, stored, threshold, max_regions)


@router.post(
    "/regions",
    responses=error_responses(400, 408, 413, 415, 422, 503, 504),
    summary="Salient regions of an upload",
    openapi_extra=upload_body("/regions", {"image": "beach.jpg"}),
)
async def post_regions(
    image: Annotated[UploadFile, File(description="The image.")],
    service: ServiceDep,
    admission: AdmissionDep,
    platform: PlatformDep,
    threshold: Threshold = 0.2,
    max_regions: MaxRegions = 10,
) -> RegionsResponse:
    """Scores the upload, keeps it like /score does, and answers its salient regions."""
    service.check_render_room()  # before a forward pass that could only end in render_busy
    upload = await read_upload(image, "image", service.settings)
    (scored,) = await admission.score([upload], platform=platform)
    stored = StoredImage(upload.data, scored.viraliency, scored.width, scored.height)
    return await _regions(service, scored.image_id, stored, threshold, max_regions)
