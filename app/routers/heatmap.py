"""GET /heatmap (an image scored recently, by id) and POST /heatmap (one upload, stateless)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Literal

import cv2
import numpy as np
from fastapi import APIRouter, Depends, File, Query, Response, UploadFile
from pydantic import BeforeValidator

from app.deps import ServiceDep
from app.engine import Engine
from app.heatmap import COLORMAPS, MEDIA_TYPES, ImageFormat, encode, outline, render
from app.images import decode
from app.regions import stored_crop_regions
from app.schemas import EXAMPLE_ID, error_responses, upload_body
from app.store import StoredImage
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
IMAGE_EXAMPLE = {
    "summary": "A 640x480 photo's heatmap",
    "description": "The image's bytes: the jet-coloured map blended over the photo, 640x480.",
    "externalValue": f"/heatmap?image_id={EXAMPLE_ID}",
}
IMAGE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            "image/png": {"examples": {"overlay": IMAGE_EXAMPLE}},
            "image/jpeg": {
                "examples": {
                    "overlay": {
                        **IMAGE_EXAMPLE,
                        "externalValue": (f"/heatmap?image_id={EXAMPLE_ID}&format=jpeg"),
                    }
                }
            },
        },
        "description": "The heatmap, at the image's own size (or within max_side).",
    }
}


@dataclass(frozen=True)
class HeatmapOptions:
    """How to draw a heatmap."""

    alpha: float = 0.5
    colormap: str = "jet"
    image_format: ImageFormat = "png"
    mode: Literal["overlay", "map"] = "overlay"
    max_side: int | None = None


def heatmap_options(
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
        int | None,
        Query(
            ge=16,
            description="Scale the heatmap down so its longer side is at most this many pixels "
            "(default: the image's own size).",
            examples=[1024],
        ),
    ] = None,
) -> HeatmapOptions:
    """The query parameters shared by GET and POST /heatmap."""
    return HeatmapOptions(alpha, colormap.value, image_format, mode, max_side)


Options = Annotated[HeatmapOptions, Depends(heatmap_options)]


def drawn_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """The image's size, scaled down to fit max_side x max_side (keeping its aspect ratio)."""
    if max_side is None or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def draw(
    stored: StoredImage, options: HeatmapOptions, max_pixels: int, engine: Engine | None = None
) -> bytes:
    """Blocking: decode the photo again (unless mode=map), render, encode. With a ViralNet
    engine, its spatial transformers' crops are outlined over the map, one colour per level."""
    width, height = drawn_size(stored.width, stored.height, options.max_side)
    photo = None if options.mode == "map" else decode(stored.upload, "stored image", max_pixels)
    if photo is not None and (width, height) != (stored.width, stored.height):
        photo = np.asarray(
            cv2.resize(photo, (width, height), interpolation=cv2.INTER_AREA), dtype=np.uint8
        )
    rgb = render(
        stored.viraliency,
        width,
        height,
        photo=photo,
        colormap=options.colormap,
        alpha=options.alpha,
    )
    if engine is not None and engine.localises:
        sx, sy = width / stored.width, height / stored.height
        crops = stored_crop_regions(engine, stored, max_pixels)
        rgb = outline(
            rgb,
            [
                (round(r.x * sx), round(r.y * sy), round(r.width * sx), round(r.height * sy))
                for r in crops
            ],
        )
    return encode(rgb, options.image_format)


@router.get(
    "/heatmap",
    response_class=Response,
    responses={**IMAGE_RESPONSE, **error_responses(404, 422, 503, 504)},
    summary="Heatmap of a recently scored image",
)
async def get_heatmap(image_id: ImageId, options: Options, service: ServiceDep) -> Response:
    """The viraliency map (eq. 7) upsampled to the image's size, blended over it by default."""
    stored = service.stored(image_id)
    body = await service.render(draw, stored, options, service.settings.max_pixels, service.engine)
    return Response(body, media_type=MEDIA_TYPES[options.image_format])


@router.post(
    "/heatmap",
    response_class=Response,
    responses={**IMAGE_RESPONSE, **error_responses(400, 413, 415, 422, 503, 504)},
    summary="Heatmap of an uploaded image (nothing is kept)",
    openapi_extra=upload_body("/heatmap", {"image": "beach.jpg"}),
)
async def post_heatmap(
    image: Annotated[UploadFile, File(description="The image.")],
    options: Options,
    service: ServiceDep,
) -> Response:
    """Scores the upload and answers its heatmap directly; the score and id come as headers."""
    service.check_render_room()  # before a forward pass that could only end in render_busy
    async with service.admit(1) as admission:
        upload = await read_upload(image, "image", service.settings)
        (scored,) = await admission.score([upload], keep=False)
        stored = StoredImage(upload.data, scored.viraliency, scored.width, scored.height)
        body = await service.render(
            draw, stored, options, service.settings.max_pixels, service.engine
        )
    headers = {"X-Image-Id": scored.image_id, "X-Viraliency-Score": f"{scored.score:.6g}"}
    return Response(body, media_type=MEDIA_TYPES[options.image_format], headers=headers)
