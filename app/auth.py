"""Optional API keys (`VIRALIENCY_API_KEYS_FILE`): who may call the service.

The file holds one key per line, or `sha256:<64 hex>` of a key (so the file need not hold the
keys themselves); blank lines and `#` comments are skipped. Only SHA-256 digests are kept in
memory. A request presents its key as `Authorization: Bearer <key>` or `X-API-Key: <key>`;
its digest is compared with every known digest by `hmac.compare_digest` (constant time, no early
exit), and a request without a known key gets 401 before its body is read. Probes (`/healthz`,
`/readyz`), the docs and the web page stay open; `/metrics` too when `metrics_public`.

Keys are never logged: a request is known by `key:<first 16 hex of the key's digest>`, which
the rate limiter uses as the client's identity. SIGHUP re-reads the file (a bad file keeps the
keys already loaded and logs why); a restart reads it too.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi import Security
from fastapi.security import APIKeyHeader, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import ApiError, error_response
from app.metrics import Metrics

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/redoc",
                        "/openapi.json", "/", "/favicon.ico"})  # fmt: skip
DIGEST_LINE = re.compile(r"^sha256:([0-9a-fA-F]{64})$")


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def read_digests(path: Path) -> tuple[bytes, ...]:
    """The file's keys as SHA-256 digests; ValueError naming the line (never its text)."""
    digests = []
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("sha256:"):
            found = DIGEST_LINE.match(line)
            if found is None:
                raise ValueError(f"{path}, line {number}: sha256: needs 64 hex digits")
            digests.append(bytes.fromhex(found[1]))
        else:
            digests.append(digest(line))
    if not digests:
        raise ValueError(f"{path} holds no API key: every request would be refused")
    return tuple(digests)


class KeyRing:
    """The known keys' digests, from a file; `identify` a presented key in constant time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._digests = read_digests(path)  # a bad file at start-up stops the service

    def __len__(self) -> int:
        return len(self._digests)

    def reload(self) -> None:
        try:
            self._digests = read_digests(self.path)
        except (OSError, ValueError) as exc:
            log.error("API keys not reloaded: %s", exc, extra={"event": "keys_not_reloaded"})
            return
        log.info("API keys reloaded", extra={"event": "keys_reloaded", "keys": len(self)})

    def identify(self, presented: str) -> str | None:
        """`key:<digest prefix>` for a known key, else None; every digest is compared."""
        wanted = digest(presented)
        match = None
        for known in self._digests:
            if hmac.compare_digest(wanted, known):
                match = known
        return None if match is None else f"key:{match.hex()[:16]}"


def presented_key(headers: dict[bytes, bytes]) -> str | None:
    authorization = headers.get(b"authorization", b"").decode("latin-1")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    api_key = headers.get(b"x-api-key", b"").decode("latin-1").strip()
    return api_key or None


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return f"addr:{client[0]}" if client else "addr:unknown"


class RequireKey:
    """ASGI middleware: 401 without a known key (when keys are on), before the body is read.
    Sets `request.state.client_id` (the key's id, or the client's address) for rate limits."""

    def __init__(
        self, app: ASGIApp, keys: KeyRing | None, metrics: Metrics, metrics_public: bool
    ) -> None:
        self.app = app
        self.keys = keys
        self.metrics = metrics
        self.open_paths = OPEN_PATHS | ({"/metrics"} if metrics_public else set())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            client_id = client_address(scope)
            if self.keys is not None and scope["path"] not in self.open_paths:
                key = presented_key(dict(scope["headers"]))
                identity = None if key is None else self.keys.identify(key)
                if identity is None:
                    await self._refuse(scope, key is None)(scope, receive, send)
                    return
                client_id = identity
            scope.setdefault("state", {})["client_id"] = client_id
        await self.app(scope, receive, send)

    def _refuse(self, scope: Scope, missing: bool) -> ASGIApp:
        why = "no API key was sent" if missing else "the API key is not known"
        error = ApiError(
            401,
            "unauthorized",
            f"{why}: send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
        log.info(
            "request refused",
            extra={"event": "refused", "path": scope["path"], "status": 401, "reason": why},
        )
        self.metrics.rejections.labels(reason="unauthorized").inc()
        return error_response(error)


bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The API key")


async def documented(
    _bearer: object = Security(bearer), _api_key: object = Security(api_key_header)
) -> None:
    """Declares the two ways to send a key, so /docs offers 'Authorize'; RequireKey checks.
    (async: see app/deps.py)"""


@contextmanager
def reload_on_sighup(keys: KeyRing | None) -> Iterator[None]:
    """While the service runs, SIGHUP re-reads the key file (main thread's loop only)."""
    if keys is None:
        yield
        return
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, keys.reload)
    except (NotImplementedError, RuntimeError, ValueError) as exc:  # not the main thread
        log.warning("SIGHUP will not reload the API keys: %s", exc)
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
