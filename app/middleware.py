"""Per-route request metrics, the per-request log line, and the last resort for unexpected
errors: a plain 500.

The per-request line (`event: request`: route, method, status, ms) is logged at `debug`, and
built only when that level is on: at `info` formatting a JSON line for every request cost ~20%
of the service's images/s on 2 CPU cores (bench/RESULTS.md, "Per-request overhead"). Refusals
(4xx/503/504, app/errors.py) and unhandled errors are still logged at `info` and above.
"""

from __future__ import annotations

import logging
import time

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import error_body
from app.metrics import Metrics

log = logging.getLogger(__name__)


class ObserveRequests:
    """Counts and times every HTTP request by its route template (never the raw path, so ids
    in query strings or unknown paths cannot blow up the metric's cardinality)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_observed(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        except Exception:
            log.exception(
                "unhandled error",
                extra={"event": "error", "method": scope["method"], "path": scope["path"]},
            )
            if not response_started:
                body = error_body("internal_error", "internal server error; it has been logged")
                await JSONResponse(body, status_code=500)(scope, receive, send_observed)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            elapsed = time.perf_counter() - started
            self.metrics.requests.labels(route=route, method=method, status=str(status)).inc()
            self.metrics.latency.labels(route=route, method=method).observe(elapsed)
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "request",
                    extra={
                        "event": "request",
                        "route": route,
                        "method": method,
                        "status": status,
                        "ms": round(elapsed * 1000.0, 2),
                    },
                )
