"""Response bodies, with the descriptions and examples the OpenAPI docs show."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

EXAMPLE_ID = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


class ScoreEntry(BaseModel):
    image_id: str = Field(
        description="Hex SHA-256 of the uploaded bytes; names the image in GET /heatmap.",
        examples=[EXAMPLE_ID],
    )
    score: float = Field(description="The network's raw virality score s(I).", examples=[1.73])
    percentile: float | None = Field(
        description="Where the score falls among the checkpoint's calibration images, 0-100 "
        "(null when the checkpoint has no calibration table).",
        examples=[87.5],
    )
    heatmap_url: str | None = Field(
        description="Where the image's viraliency heatmap can be fetched while it is kept; "
        "null when the image is too large to keep (VIRALIENCY_HEATMAP_STORE_MAX_BYTES).",
        examples=[f"/heatmap?image_id={EXAMPLE_ID}"],
    )
    width: int = Field(description="Image width in pixels, after EXIF orientation.", examples=[640])
    height: int = Field(
        description="Image height in pixels, after EXIF orientation.", examples=[480]
    )


class ScoreResponse(BaseModel):
    results: list[ScoreEntry] = Field(description="One entry per uploaded image, in upload order.")


class CompareResponse(BaseModel):
    probability_a_more_viral: float = Field(
        description="sigmoid(s(a) - s(b)): the network's probability that image_a is more viral.",
        examples=[0.81],
    )
    winner: Literal["a", "b"] = Field(
        description='"a" when s(a) >= s(b), else "b".', examples=["a"]
    )
    a: ScoreEntry = Field(description="image_a, as in /score.")
    b: ScoreEntry = Field(description="image_b, as in /score.")


class RankedEntry(ScoreEntry):
    rank: int = Field(description="1 for the most viral image.", examples=[1])
    index: int = Field(description="Position of the image in the upload, from 0.", examples=[2])


class RankResponse(BaseModel):
    ranking: list[RankedEntry] = Field(description="The uploaded images, most viral first.")


class RegionBox(BaseModel):
    x: int = Field(description="Left edge in image pixels.", examples=[112])
    y: int = Field(description="Top edge in image pixels.", examples=[40])
    width: int = Field(description="Box width in pixels.", examples=[230])
    height: int = Field(description="Box height in pixels.", examples=[180])
    peak: float = Field(description="Largest viraliency map value (eq. 7) inside.", examples=[0.9])
    mean: float = Field(description="Mean viraliency map value inside.", examples=[0.41])
    scale: float | None = Field(
        default=None,
        description="ViralNet only: the resolution (1, 0.5, 0.25) of the pyramid level whose "
        "spatial transformer cropped this box; null for LENA's map regions.",
        examples=[0.5],
    )


class RegionsResponse(BaseModel):
    image_id: str = Field(description="Hex SHA-256 of the image.", examples=[EXAMPLE_ID])
    width: int = Field(description="Image width in pixels.", examples=[640])
    height: int = Field(description="Image height in pixels.", examples=[480])
    threshold: float = Field(
        description="Fraction of the map's maximum a pixel must reach to be in a region.",
        examples=[0.2],
    )
    regions: list[RegionBox] = Field(description="Salient regions, highest peak first.")


class HealthResponse(BaseModel):
    status: Literal["ok"] = Field(examples=["ok"])


class ReadyResponse(BaseModel):
    status: Literal["ready", "not_ready"] = Field(examples=["ready"])
    device: str | None = Field(description="Device the model runs on.", examples=["cuda:0"])
    queued_images: int = Field(description="Images admitted and not yet scored.", examples=[3])
    heatmap_store: Literal["memory", "redis", "redis_unavailable"] = Field(
        default="memory",
        description="Where GET /heatmap finds scored images: memory (this process), redis "
        "(shared, answering) or redis_unavailable (scoring goes on, without heatmap_url; "
        "readiness does not depend on it).",
        examples=["redis"],
    )


class ModelResponse(BaseModel):
    """The checkpoint's own description (config.json), with the device it runs on."""

    device: str = Field(examples=["cuda:0"])
    checkpoint: dict[str, Any] = Field(
        description="network (backbone, pooling, eta_init, objectness_classes), preprocessing, "
        "eta summary, calibration, training (data, licence) and metrics.",
        examples=[
            {
                "network": {"backbone": "mobilenet_v2", "pooling": "lena", "eta_init": 0.5},
                "preprocessing": {"input_size": 224, "resize": "squash"},
                "eta": {"mean": 0.31, "min": 0.02, "max": 0.97},
                "training": {"data": "...", "licence": "..."},
            }
        ],
    )


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable reason.", examples=["corrupt_image"])
    message: str = Field(
        description="What is wrong and how to fix it.",
        examples=["images[0] ('a.jpg') could not be decoded; the file is corrupt or truncated."],
    )
    accepted: list[str] | None = Field(
        None,
        description="Accepted image formats, for errors about an upload.",
        examples=[["JPEG", "PNG", "WebP", "BMP", "TIFF", "GIF (first frame)"]],
    )


class ErrorResponse(BaseModel):
    error: ErrorDetail


ACCEPTED_EXAMPLE = ["JPEG", "PNG", "WebP", "BMP", "TIFF", "GIF (first frame)"]


def _example(summary: str, code: str, message: str, upload: bool = False) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if upload:
        error["accepted"] = ACCEPTED_EXAMPLE
    return {summary: {"summary": summary, "value": {"error": error}}}


# Per status: what it means and an example body of each of its common codes.
ERRORS: dict[int, tuple[str, dict[str, Any]]] = {
    400: (
        "Empty, corrupt or truncated upload.",
        _example(
            "corrupt_image",
            "corrupt_image",
            "images[0] ('a.jpg') could not be decoded (OSError: image file is truncated); "
            "the file is corrupt or truncated.",
            upload=True,
        ),
    ),
    401: (
        "Missing or wrong API key (send `Authorization: Bearer <key>`).",
        _example(
            "unauthorized",
            "unauthorized",
            "this server needs an API key: send it as `Authorization: Bearer <key>`",
        ),
    ),
    404: (
        "Unknown or expired image_id.",
        _example(
            "unknown_image_id",
            "unknown_image_id",
            f"no recently scored image has id '{EXAMPLE_ID}': ids are kept for 900 s after "
            "POST /score (and while the store has room); score the image again, or POST it "
            "to /heatmap directly",
        ),
    ),
    408: (
        "The request body did not arrive within VIRALIENCY_BODY_TIMEOUT_S.",
        _example(
            "body_timeout",
            "body_timeout",
            "the request body did not arrive within 30 s; send it faster or in smaller parts",
        ),
    ),
    413: (
        "Upload, pixel count or number of images over the limit.",
        _example(
            "file_too_large",
            "file_too_large",
            "images[0] ('huge.jpg') is larger than the limit of 20971520 bytes; send a "
            "smaller or more compressed image.",
            upload=True,
        ),
    ),
    415: (
        "Not an image in an accepted format.",
        _example(
            "unsupported_format",
            "unsupported_format",
            "images[0] ('notes.txt') is not an image in an accepted format (12 bytes, "
            "starting b'hello wo').",
            upload=True,
        ),
    ),
    422: (
        "Missing or invalid field or parameter.",
        _example("invalid_request", "invalid_request", "images: Field required"),
    ),
    429: (
        "Too many requests from this client; wait Retry-After seconds.",
        _example(
            "rate_limited", "rate_limited", "too many requests; retry after 1 s (Retry-After)"
        ),
    ),
    503: (
        "Queue full, drawing slots busy, shutting down or not ready (see Retry-After).",
        _example(
            "queue_full",
            "queue_full",
            "overloaded: 1024 images queued, 2 more do not fit; retry later",
        ),
    ),
    504: (
        "Not scored before the request deadline.",
        _example(
            "deadline_exceeded",
            "deadline_exceeded",
            "not answered within the 10 s deadline (waited 10.002 s); the service is "
            "overloaded, retry later",
        ),
    ),
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error answers a route can give, each with its own example."""
    return {
        status: {
            "model": ErrorResponse,
            "description": ERRORS[status][0],
            "content": {"application/json": {"examples": ERRORS[status][1]}},
        }
        for status in statuses
    }


def mark_binary_files(schema: dict[str, Any]) -> dict[str, Any]:
    """Add `format: binary` to every file field (a string with contentMediaType
    application/octet-stream, alone or as array items) of a generated OpenAPI schema, in place.

    FastAPI writes file fields the OpenAPI 3.1 way (contentMediaType); Swagger UI shows a file
    picker only for `format: binary`, and a text box otherwise, which sends text (422).
    """

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("contentMediaType") == "application/octet-stream":
                node.setdefault("format", "binary")
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(schema.get("components", {}))
    return schema


def upload_body(path: str, files: dict[str, str | list[str]]) -> dict[str, Any]:
    """`openapi_extra` with an example of a multipart request body: file names by field, and
    the curl command that sends them (the docs cannot show file contents)."""
    parts = [
        f"-F {field}=@{name}"
        for field, names in files.items()
        for name in ([names] if isinstance(names, str) else names)
    ]
    example = {
        "summary": ", ".join(f"{field}: {names}" for field, names in files.items()),
        "description": f"`curl {' '.join(parts)} http://localhost:8000{path}`",
        "value": files,
    }
    return {"requestBody": {"content": {"multipart/form-data": {"examples": {"files": example}}}}}
