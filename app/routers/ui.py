"""The web page at `/`: static files shipped in the package (app/static), no build step.

`/` answers app/static/index.html; `/static/...` serves its script, styles and the vendored
documentation assets (app/routers/docs.py). The page talks to the API with fetch() only.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent.parent / "static"

router = APIRouter(include_in_schema=False)


@router.get("/")
async def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html")


def install(app: FastAPI) -> None:
    """Serve `/` and mount `/static` (check_dir: a missing folder fails at start-up)."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC, check_dir=True), name="static")
