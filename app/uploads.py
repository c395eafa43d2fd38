"""Admitting multipart uploads: body size, time, memory, file counts and queue room.

`UploadRoute` checks, in this order and each before the next costs anything:
1. Content-Length against the route's own limit (413);
2. admit: queue slots for the route's fewest files are *reserved* (503 at once, nothing of the
   body read, when the queue is full or they would not be scored within the deadline), so a
   single-file route can no longer lose the race for the last slots after its body arrived;
3. the body as it streams in: its bytes against the route's limit (413 once over, chunked
   bodies too) and against the upload byte budget shared by all requests (503 once over), the
   whole body within body_timeout_s (408); a client that goes away is counted as a disconnect;
4. the number of files per field (413, or 400 for a repeated single field);
5. slots for the files beyond the fewest (a /score with n files: n - 1 more), 503 when gone:
   only such a request can still be refused after its body was received (see the README).
Its queue slots and byte hold are released however the request ends; the route gets the
`Admission` through `app.deps.AdmissionDep`, and the whole handler runs within the deadline.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, get_origin

from fastapi import Request, Response, UploadFile
from fastapi.routing import APIRoute
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartParser
from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive

from app.budget import BudgetExceededError, Hold
from app.errors import ApiError
from app.images import ACCEPTED
from app.service import Service, Upload
from app.settings import Settings

log = logging.getLogger(__name__)

CLIENT_CLOSED = 499  # nginx's status for "the client closed the connection"; never sent
ADMISSION = "viraliency.admission"  # the request's Admission, in its ASGI scope

MULTIPART_OVERHEAD = 64 * 1024  # boundaries, headers and small form fields

# Uploaded files stay in memory while the body is parsed; Starlette's default spools each file
# over 1 MiB to a temporary file on disk. `read_upload` reads every file whole into memory next
# anyway, and the body is already bounded by its route's limit and the upload byte budget, so
# the disk bought nothing: parsing and reading a body of eight 12 MP photos (27.7 MB) took
# 76-90 ms against 12-15 in memory (bench/multipart_parse.py), and it needed a writable /tmp.
# The class attribute is Starlette's override point (tests/app/test_inputs.py checks it holds).
MultiPartParser.spool_max_size = sys.maxsize


async def read_upload(file: UploadFile, name: str, settings: Settings) -> Upload:
    """One upload's bytes; 413 when it is over max_upload_bytes (reads at most one byte more)."""
    label = f"{name} ({file.filename!r})"
    data = await file.read(settings.max_upload_bytes + 1)
    await file.close()  # frees the parsed copy now, not when the request ends
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
    if limit >= settings.max_queued_bytes:
        why = "the upload byte budget of all requests together"
    else:
        why = f"{files} image{'s' if files > 1 else ''} of at most {settings.max_upload_bytes} "
        why += "bytes each"
    return ApiError(
        413,
        "request_too_large",
        f"the request body is {size} bytes; this route accepts at most {limit} ({why})",
        accepted=ACCEPTED,
    )


class BodyTooLargeError(Exception):
    """The body went over its limit while streaming in."""


class CountedBody:
    """A `receive` that counts the body's bytes as they arrive, refuses once over `limit`, and
    takes each chunk's bytes from the request's `hold` in the upload byte budget."""

    def __init__(self, receive: Receive, limit: int, hold: Hold | None = None) -> None:
        self._receive = receive
        self.limit = limit
        self.received = 0
        self._hold = hold

    @property
    def over_limit(self) -> bool:
        return self.received > self.limit

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            size = len(message.get("body", b""))
            self.received += size
            if self.over_limit:
                raise BodyTooLargeError(f"{self.received} bytes received; limit {self.limit}")
            if self._hold is not None:
                self._hold.take(size)
        return message


async def read_form(
    counted: Request, body: CountedBody, files: int, settings: Settings
) -> FormData:
    """Parse the multipart body of `counted` (which receives through `body`) within
    body_timeout_s; the client's errors as ApiErrors (413, 408, 400), a full byte budget as
    BudgetExceededError, a client that went away as ClientDisconnect."""
    limit = body.limit
    try:
        async with asyncio.timeout(settings.body_timeout_s):
            return await counted.form()
    except (HTTPException, ClientDisconnect, BudgetExceededError):
        raise  # Starlette's own 400 for a malformed multipart body, or not the client's fault
    except TimeoutError:
        raise ApiError(
            408,
            "body_timeout",
            f"the request body did not arrive within {settings.body_timeout_s:g} s "
            f"({body.received} bytes received); send it faster or in smaller requests",
        ) from None
    except Exception as exc:
        if body.over_limit:
            raise _too_large(f"over {limit}", limit, files, settings) from None
        message = f"the multipart body could not be read ({type(exc).__name__})"
        raise ApiError(400, "malformed_body", message) from None


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
    """Admits a request before its multipart body is read; see the module docstring."""

    @property
    def file_fields(self) -> list[FileField]:
        return [
            FileField(f.alias, get_origin(f.field_info.annotation) is list)
            for f in self.dependant.body_params
        ]

    @property
    def accepted_formats(self) -> list[str] | None:
        """What a 422 on this route lists as accepted (app.errors)."""
        return list(ACCEPTED) if self.file_fields else None

    def most_files(self, settings: Settings) -> int:
        return sum(field.most(settings) for field in self.file_fields)

    def fewest_files(self) -> int:
        return sum(1 for field in self.file_fields if not field.repeated) or 1

    def body_limit(self, settings: Settings) -> int:
        """The route's own files' worth, and never more than the whole byte budget."""
        own = settings.max_upload_bytes * self.most_files(settings) + MULTIPART_OVERHEAD
        return min(own, settings.max_queued_bytes)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if not self.file_fields:
            return handler

        async def admitted(request: Request) -> Response:
            settings: Settings = request.app.state.settings
            limit = self.body_limit(settings)
            length = request.headers.get("content-length", "")
            if length.isdigit() and int(length) > limit:
                raise _too_large(length, limit, self.most_files(settings), settings)
            service: Service | None = request.app.state.service
            if service is None:
                return await handler(request)  # its ServiceDep answers 503 not_ready
            try:
                return await self._admit_and_handle(request, service, limit, handler)
            except ClientDisconnect:
                return _client_gone(request, service)

        return admitted

    async def _admit_and_handle(
        self,
        request: Request,
        service: Service,
        limit: int,
        handler: Callable[[Request], Coroutine[Any, Any, Response]],
    ) -> Response:
        settings = service.settings
        fewest = self.fewest_files()
        with service.reserve(fewest) as reservation, service.upload_bytes.hold() as hold:
            body = CountedBody(request.receive, limit, hold)
            counted = Request(request.scope, body.receive)
            try:
                form = await read_form(counted, body, self.most_files(settings), settings)
            except BudgetExceededError as exc:
                raise service.refusal(exc) from None
            try:
                _check_counts(form, self.file_fields, settings)
                files = sum(len(form.getlist(field.name)) for field in self.file_fields)
                if files > fewest:
                    service.extend(reservation, files - fewest)
                request.scope[ADMISSION] = service.admission(reservation)
                async with service.deadline():
                    return await handler(counted)  # FastAPI reuses the form parsed above
            finally:
                await form.close()


def _client_gone(request: Request, service: Service) -> Response:
    """Count a client that went away mid-upload as a disconnect, not as a client error."""
    service.metrics.disconnects.inc()
    log.info(
        "client disconnected",
        extra={"event": "client_disconnected", "path": request.url.path},
    )
    return Response(status_code=CLIENT_CLOSED)
