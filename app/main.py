"""The FastAPI app: `create_app(settings)` for uvicorn (--factory) and tests, `run` for the CLI."""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import Depends, FastAPI

from app.auth import KeyRing, RequireKey, documented, reload_on_sighup
from app.errors import install_error_handlers
from app.logs import configure_logging
from app.metrics import Metrics
from app.middleware import ObserveRequests
from app.ratelimit import open_limiter, rate_limited
from app.replica import NameReplica
from app.routers import compare, health, heatmap, metrics, model_info, regions, score, ui
from app.routers.docs import install_docs
from app.service import Service
from app.settings import Settings

log = logging.getLogger(__name__)

DESCRIPTION = """\
Scores how viral an image is likely to be and shows where: a siamese CNN with LENA pooling
(Alameda-Pineda et al., *Viraliency: Pooling Local Virality*, CVPR 2017).

Errors are JSON: `{"error": {"code": "...", "message": "...", "accepted": [...]}}`.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings if settings is not None else Settings()
    registry = Metrics()
    keys = KeyRing(settings.api_keys_file) if settings.api_keys_file is not None else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            service = await Service.start(settings, registry)
        except Exception as exc:
            log.error("startup failed: %s", exc, extra={"event": "startup_failed"})
            raise
        app.state.service = service
        app.state.limiter = open_limiter(settings)
        try:
            with reload_on_sighup(keys):
                yield
        finally:
            # uvicorn gets here on SIGTERM after its connections closed; stop() still drains.
            await service.stop()
            if app.state.limiter is not None:
                await app.state.limiter.close()

    app = FastAPI(
        title="Viraliency",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served offline by app.routers.docs
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.metrics = registry
    app.state.service = None
    app.state.limiter = None
    install_error_handlers(app)
    # Outermost last: the replica's name on every answer, requests counted, then keys checked.
    app.add_middleware(
        RequireKey, keys=keys, metrics=registry, metrics_public=settings.metrics_public
    )
    app.add_middleware(ObserveRequests, metrics=registry)
    app.add_middleware(NameReplica, name=settings.replica_name)
    keyed = [Depends(documented)] if keys is not None else []
    for module in (score, compare, heatmap, regions):
        app.include_router(module.router, dependencies=[*keyed, Depends(rate_limited)])
    app.include_router(model_info.router, dependencies=keyed)
    app.include_router(health.router)
    app.include_router(metrics.router, dependencies=[] if settings.metrics_public else keyed)
    install_docs(app)
    ui.install(app)
    return app


def run(settings: Settings | None = None) -> None:
    """Serve on settings.host:settings.port (`python -m app`, `viraliency serve`)."""
    settings = settings if settings is not None else Settings()
    configure_logging(settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        log_level=settings.log_level,
        # One JSON line per request is logged by ObserveRequests at debug; uvicorn's own access
        # line would be formatted for every request at info, the costliest step of a small one.
        access_log=False,
        loop="auto",  # uvloop when installed (a runtime dependency), else asyncio's loop
        http="auto",  # httptools when installed (a runtime dependency), else h11
        timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout_s),
    )
