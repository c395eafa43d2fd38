"""/docs (Swagger UI) and /redoc from the package's own copies, so they render offline.

FastAPI's built-in pages load their scripts, styles, fonts and favicon from CDNs; these load
everything from `/static/vendor/` (app/static/vendor/README.md says where the files come from).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse

from app.schemas import mark_binary_files

router = APIRouter(include_in_schema=False)

SWAGGER = "/static/vendor/swagger-ui"
REDOC = "/static/vendor/redoc"


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", ""))


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    root = _root(request)
    return get_swagger_ui_html(
        openapi_url=root + request.app.openapi_url,
        title=f"{request.app.title} - Swagger UI",
        swagger_js_url=f"{root}{SWAGGER}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{SWAGGER}/swagger-ui.css",
        swagger_favicon_url=f"{root}{SWAGGER}/favicon-32x32.png",
        # The validator badge would send the schema to validator.swagger.io.
        swagger_ui_parameters={"validatorUrl": None, "tryItOutEnabled": True},
    )


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    root = _root(request)
    return get_redoc_html(
        openapi_url=root + request.app.openapi_url,
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=f"{root}{REDOC}/redoc.standalone.js",
        redoc_favicon_url=f"{root}{SWAGGER}/favicon-32x32.png",
        with_google_fonts=False,
    )


def install_docs(app: FastAPI) -> None:
    """Serve the offline pages and mark file fields as binary in the generated schema.

    The app must be created with docs_url=None and redoc_url=None.
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = mark_binary_files(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.include_router(router)
