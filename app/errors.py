"""Every error as one JSON shape: {"error": {"code", "message", "accepted"}}.

`accepted` is always there: the accepted image formats for errors about an upload (and for a
422 on a route that takes uploads), null otherwise.

Deliberate refusals (bad image, too large, unknown id, overloaded) are `ApiError`s; they are
logged with their reason and counted in the `viraliency_rejections_total` metric. Anything else
is logged with its traceback by `app.middleware` and answered as a plain 500.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    """A deliberate client-facing error: HTTP status, a stable code and a helpful message."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        accepted: Sequence[str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.accepted = list(accepted) if accepted is not None else None
        self.headers = dict(headers or {})


def error_body(code: str, message: str, accepted: Sequence[str] | None = None) -> dict[str, Any]:
    listed = list(accepted) if accepted is not None else None
    return {"error": {"code": code, "message": message, "accepted": listed}}


def error_response(error: ApiError) -> JSONResponse:
    body = error_body(error.code, error.message, error.accepted)
    return JSONResponse(body, status_code=error.status, headers=error.headers)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    log.info(
        "request refused",
        extra={
            "event": "refused",
            "path": request.url.path,
            "status": exc.status,
            "reason": exc.code,
            "detail": exc.message,
        },
    )
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.rejections.labels(reason=exc.code).inc()
    return error_response(exc)


def _describe_validation(errors: Sequence[Any]) -> str:
    parts = []
    for err in errors:
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query"))
        parts.append(f"{where or 'request'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # A route that takes uploads (app.uploads.UploadRoute) names the formats it accepts.
    accepted = getattr(request.scope.get("route"), "accepted_formats", None)
    error = ApiError(422, "invalid_request", _describe_validation(exc.errors()), accepted)
    return await _api_error(request, error)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    codes = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}
    code = codes.get(exc.status_code, "bad_request" if exc.status_code < 500 else "error")
    error = ApiError(exc.status_code, code, str(exc.detail), headers=exc.headers)
    return await _api_error(request, error)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
