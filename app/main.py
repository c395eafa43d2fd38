"""The FastAPI app: `create_app(settings)` for uvicorn (--factory) and tests, `run` for the CLI."""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI

from app.errors import install_error_handlers
from app.logs import configure_logging
from app.metrics import Metrics
from app.middleware import ObserveRequests
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

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            service = await Service.start(settings, registry)
        except Exception as exc:
            log.error("startup failed: %s", exc, extra={"event": "startup_failed"})
            raise
        app.state.service = service
        try:
            yield
        finally:
            # uvicorn gets here on SIGTERM after its connections closed; stop() still drains.
            await service.stop()

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
    install_error_handlers(app)
    app.add_middleware(ObserveRequests, metrics=registry)
    for module in (score, compare, heatmap, regions, model_info, health, metrics):
        app.include_router(module.router)
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
        timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout_s),
    )
