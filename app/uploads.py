"""Reading multipart uploads within the size limits, before anything is decoded."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from fastapi import Request, Response, UploadFile
from fastapi.routing import APIRoute

from app.errors import ApiError
from app.images import ACCEPTED
from app.service import Upload
from app.settings import Settings

MULTIPART_OVERHEAD = 64 * 1024  # boundaries, headers and small form fields


async def read_upload(file: UploadFile, name: str, settings: Settings) -> Upload:
    """One upload's bytes; 413 when it is over max_upload_bytes (reads at most one byte more)."""
    label = f"{name} ({file.filename!r})"
    data = await file.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise ApiError(
            413,
            "file_too_large",
            f"{label} is larger than the limit of {settings.max_upload_bytes} bytes; "
            "send a smaller or more compressed image.",
            accepted=ACCEPTED,
        )
    return Upload(label, data)


async def read_uploads(files: Sequence[UploadFile], field: str, settings: Settings) -> list[Upload]:
    """The uploads of a repeated field, in order; 413 for too many files or too large a file."""
    if len(files) > settings.max_images_per_request:
        raise ApiError(
            413,
            "too_many_images",
            f"{len(files)} images in one request; the limit is "
            f"{settings.max_images_per_request}. Split the request.",
        )
    return [await read_upload(f, f"{field}[{i}]", settings) for i, f in enumerate(files)]


class UploadRoute(APIRoute):
    """Refuses a request whose Content-Length exceeds what its files may add up to, before the
    multipart body is parsed (and spooled to disk)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def limited(request: Request) -> Response:
            settings: Settings = request.app.state.settings
            limit = settings.max_upload_bytes * settings.max_images_per_request + MULTIPART_OVERHEAD
            length = request.headers.get("content-length", "")
            if length.isdigit() and int(length) > limit:
                raise ApiError(
                    413,
                    "request_too_large",
                    f"the request body is {length} bytes; at most {limit} are accepted "
                    f"({settings.max_images_per_request} images of at most "
                    f"{settings.max_upload_bytes} bytes each)",
                    accepted=ACCEPTED,
                )
            return await handler(request)

        return limited
