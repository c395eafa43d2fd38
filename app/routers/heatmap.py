"""GET /heatmap (an image scored recently, by id) and POST /heatmap (one upload, stateless)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Query, Response, UploadFile
from pydantic import BeforeValidator

from app.deps import AdmissionDep, PlatformDep, ServiceDep
from app.errors import ApiError
from app.heatmap import COLORMAPS, DEFAULT_MAX_SIDE, MEDIA_TYPES, HeatmapOptions
from app.regions import draw_explained
from app.schemas import EXAMPLE_ID, error_responses, upload_body
from app.service import Service
from app.store import StoredImage, StoreUnavailableError
from app.uploads import UploadRoute, read_upload

router = APIRouter(tags=["explanation"], route_class=UploadRoute)

Colormap = StrEnum("Colormap", {name.upper(): name for name in COLORMAPS})  # type: ignore[misc]
JET = Colormap("jet")


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


ImageId = Annotated[
    str,
    Query(
        pattern="^[0-9a-f]{64}$",
        description="image_id from POST /score (hex SHA-256 of the upload).",
        examples=[EXAMPLE_ID],
    ),
]
# The examples are real heatmaps shipped with the page (app/static/examples): ReDoc fetches an
# example's externalValue, and an example image_id is never in the store.
IMAGE_EXAMPLE = {
    "summary": "A 320x240 photo's heatmap",
    "description": "The image's bytes: the jet-coloured map blended over the photo, 320x240.",
}
IMAGE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            media: {
                "schema": {"type": "string", "format": "binary"},
                "examples": {
                    "overlay": {
                        **IMAGE_EXAMPLE,
                        "externalValue": f"/static/examples/heatmap.{extension}",
                    }
                },
            }
            for media, extension in (("image/png", "png"), ("image/jpeg", "jpeg"))
        },
        "description": "The heatmap, at the image's own size within max_side (default "
        f"{DEFAULT_MAX_SIDE}).",
    }
}


async def heatmap_options(
    alpha: Annotated[
        float,
        Query(ge=0.0, le=1.0, description="Weight of the map over the photo.", examples=[0.6]),
    ] = 0.5,
    colormap: Annotated[
        Colormap,
        BeforeValidator(_lower),
        Query(description="An OpenCV colormap, by name (any case).", examples=["inferno"]),
    ] = JET,
    image_format: Annotated[
        Literal["png", "jpeg"],
        Query(alias="format", description="Image format.", examples=["jpeg"]),
    ] = "png",
    mode: Annotated[
        Literal["overlay", "map"],
        Query(
            description="overlay: blended over the photo; map: the coloured map alone.",
            examples=["map"],
        ),
    ] = "overlay",
    max_side: Annotated[
        int,
        Query(
            ge=16,
            description="Scale the heatmap down so its longer side is at most this many pixels "
            f"(default {DEFAULT_MAX_SIDE}; larger than the image's own sides: its own size).",
            examples=[1024],
        ),
    ] = DEFAULT_MAX_SIDE,
) -> HeatmapOptions:
    """The query parameters shared by GET and POST /heatmap (async: see app/deps.py)."""
    return HeatmapOptions(alpha, colormap.value, image_format, mode, max_side)


Options = Annotated[HeatmapOptions, Depends(heatmap_options)]


async def stored_or_404(service: Service, image_id: str) -> StoredImage:
    """The kept image with this id; 404 unknown_image_id, or 503 store_unavailable while the
    shared store cannot be read."""
    try:
        entry = await service.stored(image_id)
    except StoreUnavailableError as exc:
        raise ApiError(
            503,
            "store_unavailable",
            f"{exc}: the image may be kept but cannot be read now; retry later, or POST it "
            "to /heatmap directly",
            headers={"Retry-After": str(max(1, service.settings.retry_after_s))},
        ) from None
    if entry is None:
        raise ApiError(
            404,
            "unknown_image_id",
            f"no recently scored image has id {image_id!r}: ids are kept for "
            f"{service.settings.heatmap_ttl_s:g} s after POST /score (and while the store has "
            "room); score the image again, or POST it to /heatmap directly",
        )
    return entry


@router.get(
    "/heatmap",
    response_class=Response,
    responses={**IMAGE_RESPONSE, **error_responses(404, 422, 503, 504)},
    summary="Heatmap of a recently scored image",
)
async def get_heatmap(image_id: ImageId, options: Options, service: ServiceDep) -> Response:
    """The viraliency map (eq. 7) upsampled to the image's size, blended over it by default."""
    stored = await stored_or_404(service, image_id)
    body = await service.render(
        draw_explained, stored, options, service.settings.max_pixels, service.engine
    )
    return Response(body, media_type=MEDIA_TYPES[options.image_format])


@router.post(
    "/heatmap",
    response_class=Response,
    responses={**IMAGE_RESPONSE, **error_responses(400, 408, 413, 415, 422, 503, 504)},
    summary="Heatmap of an uploaded image (nothing is kept)",
    openapi_extra=upload_body("/heatmap", {"image": "beach.jpg"}),
)
async def post_heatmap(
    image: Annotated[UploadFile, File(description="The image.")],
    options: Options,
    service: ServiceDep,
    admission: AdmissionDep,
    platform: PlatformDep,
) -> Response:
    """Scores the upload and answers its heatmap directly; the score and id come as headers."""
    service.check_render_room()  # before a forward pass that could only end in render_busy
    upload = await read_upload(image, "image", service.settings)
    (scored,) = await admission.score([upload], keep=False, platform=platform)
    stored = StoredImage(upload.data, scored.viraliency, scored.width, scored.height)
    body = await service.render(
        draw_explained, stored, options, service.settings.max_pixels, service.engine
    )
    headers = {"X-Image-Id": scored.image_id, "X-Viraliency-Score": f"{scored.score:.6g}"}
    return Response(body, media_type=MEDIA_TYPES[options.image_format], headers=headers)
