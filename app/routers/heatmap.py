"""GET /heatmap (an image scored recently, by id) and POST /heatmap (one upload, stateless)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Query, Response, UploadFile

from app.deps import ServiceDep
from app.heatmap import COLORMAPS, MEDIA_TYPES, ImageFormat, encode, render
from app.images import decode
from app.schemas import EXAMPLE_ID, error_responses
from app.store import StoredImage
from app.uploads import UploadRoute, read_upload

router = APIRouter(tags=["explanation"], route_class=UploadRoute)

Colormap = StrEnum("Colormap", {name.upper(): name for name in COLORMAPS})  # type: ignore[misc]
JET = Colormap("jet")
ImageId = Annotated[
    str,
    Query(
        pattern="^[0-9a-f]{64}$",
        description="image_id from POST /score (hex SHA-256 of the upload).",
        examples=[EXAMPLE_ID],
    ),
]
IMAGE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"image/png": {}, "image/jpeg": {}},
        "description": "The heatmap, at the image's own size.",
    }
}


@dataclass(frozen=True)
class HeatmapOptions:
    """How to draw a heatmap."""

    alpha: float = 0.5
    colormap: str = "jet"
    image_format: ImageFormat = "png"
    mode: Literal["overlay", "map"] = "overlay"


def heatmap_options(
    alpha: Annotated[
        float, Query(ge=0.0, le=1.0, description="Weight of the map over the photo.")
    ] = 0.5,
    colormap: Annotated[Colormap, Query(description="An OpenCV colormap, by name.")] = JET,
    image_format: Annotated[
        Literal["png", "jpeg"], Query(alias="format", description="Image format.")
    ] = "png",
    mode: Annotated[
        Literal["overlay", "map"],
        Query(description="overlay: blended over the photo; map: the coloured map alone."),
    ] = "overlay",
) -> HeatmapOptions:
    """The query parameters shared by GET and POST /heatmap."""
    return HeatmapOptions(alpha, colormap.value, image_format, mode)


Options = Annotated[HeatmapOptions, Depends(heatmap_options)]


def draw(stored: StoredImage, options: HeatmapOptions, max_pixels: int) -> bytes:
    """Blocking: decode the photo again (unless mode=map), render, encode."""
    photo = None if options.mode == "map" else decode(stored.upload, "stored image", max_pixels)
    rgb = render(
        stored.viraliency,
        stored.width,
        stored.height,
        photo=photo,
        colormap=options.colormap,
        alpha=options.alpha,
    )
    return encode(rgb, options.image_format)


@router.get(
    "/heatmap",
    response_class=Response,
    responses={**IMAGE_RESPONSE, **error_responses(404, 422)},
    summary="Heatmap of a recently scored image",
)
async def get_heatmap(image_id: ImageId, options: Options, service: ServiceDep) -> Response:
    """The viraliency map (eq. 7) upsampled to the image's size, blended over it by default."""
    stored = service.stored(image_id)
    body = await service.in_pool(draw, stored, options, service.settings.max_pixels)
    return Response(body, media_type=MEDIA_TYPES[options.image_format])


@router.post(
    "/heatmap",
    response_class=Response,
    responses={**IMAGE_RESPONSE, **error_responses(400, 413, 415, 422, 503, 504)},
    summary="Heatmap of an uploaded image (nothing is kept)",
)
async def post_heatmap(
    image: Annotated[UploadFile, File(description="The image.")],
    options: Options,
    service: ServiceDep,
) -> Response:
    """Scores the upload and answers its heatmap directly; the score and id come as headers."""
    upload = await read_upload(image, "image", service.settings)
    (scored,) = await service.score([upload], keep=False)
    stored = StoredImage(upload.data, scored.viraliency, scored.width, scored.height)
    body = await service.in_pool(draw, stored, options, service.settings.max_pixels)
    headers = {"X-Image-Id": scored.image_id, "X-Viraliency-Score": f"{scored.score:.6g}"}
    return Response(body, media_type=MEDIA_TYPES[options.image_format], headers=headers)
