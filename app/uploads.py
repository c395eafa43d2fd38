"""Admitting multipart uploads: body size, file counts and queue room, before bytes are read.

`UploadRoute` checks, in this order and each before the next costs anything:
Content-Length against the route's own limit (413), room in the queue for the route's fewest
files (503, nothing of the body read), the body's bytes as they stream in (413 once over, also
for chunked bodies), the number of files per field (413, or 400 for a repeated single field).
Routes then reserve queue slots for their files before reading them into memory.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, get_origin

from fastapi import Request, Response, UploadFile
from fastapi.routing import APIRoute
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.types import Message, Receive

from app.errors import ApiError
from app.images import ACCEPTED
from app.service import Service, Upload
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
    """The uploads of a repeated field, in order (UploadRoute has already checked their count)."""
    return [await read_upload(f, f"{field}[{i}]", settings) for i, f in enumerate(files)]


@dataclass(frozen=True)
class FileField:
    name: str
    repeated: bool  # list[UploadFile]: up to max_images_per_request files; else exactly one

    def most(self, settings: Settings) -> int:
        return settings.max_images_per_request if self.repeated else 1


def _too_large(size: str, limit: int, files: int, settings: Settings) -> ApiError:
    return ApiError(
        413,
        "request_too_large",
        f"the request body is {size} bytes; this route accepts at most {limit} "
        f"({files} image{'s' if files > 1 else ''} of at most {settings.max_upload_bytes} "
        "bytes each)",
        accepted=ACCEPTED,
    )


class BodyTooLargeError(Exception):
    """The body went over its limit while streaming in."""


class CountedBody:
    """A `receive` that counts the body's bytes as they arrive and refuses once over `limit`."""

    def __init__(self, receive: Receive, limit: int) -> None:
        self._receive = receive
        self.limit = limit
        self.received = 0

    @property
    def over_limit(self) -> bool:
        return self.received > self.limit

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.over_limit:
                raise BodyTooLargeError(f"{self.received} bytes received; limit {self.limit}")
        return message


def _check_counts(form: FormData, fields: Sequence[FileField], settings: Settings) -> None:
    for field in fields:
        count = len(form.getlist(field.name))
        if field.repeated and count > settings.max_images_per_request:
            raise ApiError(
                413,
                "too_many_images",
                f"{count} images in one request; the limit is "
                f"{settings.max_images_per_request}. Split the request.",
            )
        if not field.repeated and count > 1:
            raise ApiError(
                400,
                "repeated_field",
                f"the field {field.name!r} was sent {count} times; send exactly one file in it",
            )


class UploadRoute(APIRoute):
    """Refuses what it can before the multipart body is read; see the module docstring."""

    @property
    def file_fields(self) -> list[FileField]:
        return [
            FileField(f.alias, get_origin(f.field_info.annotation) is list)
            for f in self.dependant.body_params
        ]

    def most_files(self, settings: Settings) -> int:
        return sum(field.most(settings) for field in self.file_fields)

    def fewest_files(self) -> int:
        return sum(1 for field in self.file_fields if not field.repeated) or 1

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if not self.file_fields:
            return handler

        async def admitted(request: Request) -> Response:
            settings: Settings = request.app.state.settings
            files = self.most_files(settings)
            limit = settings.max_upload_bytes * files + MULTIPART_OVERHEAD
            length = request.headers.get("content-length", "")
            if length.isdigit() and int(length) > limit:
                raise _too_large(length, limit, files, settings)
            service: Service | None = request.app.state.service
            if service is not None:
                service.check_room(self.fewest_files())  # 503 before the body is read
            body = CountedBody(request.receive, limit)
            counted = Request(request.scope, body.receive)
            try:
                form = await counted.form()
            except HTTPException:
                raise  # Starlette's own 400 for a malformed multipart body
            except Exception as exc:
                if body.over_limit:
                    raise _too_large(f"over {limit}", limit, files, settings) from None
                message = f"the multipart body could not be read ({type(exc).__name__})"
                raise ApiError(400, "malformed_body", message) from None
            try:
                _check_counts(form, self.file_fields, settings)
            except ApiError:
                await form.close()
                raise
            return await handler(counted)  # FastAPI reuses the form parsed above

        return admitted
