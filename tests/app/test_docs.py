"""The web page and the API docs load only the app's own files; the schema suits Swagger UI."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

ASSET = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url:\s*'([^']+)'|spec-url="([^"]+)\"""")


def references(html: str) -> list[str]:
    return [next(g for g in match.groups() if g) for match in ASSET.finditer(html)]


@pytest.mark.parametrize("path", ["/", "/docs", "/redoc"])
async def test_pages_reference_no_external_host(client: httpx.AsyncClient, path: str) -> None:
    page = await client.get(path)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    urls = references(page.text)
    assert urls, "the page references its scripts and styles"
    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}", page.text, re.IGNORECASE)
    for url in urls:
        if url.startswith("#"):
            continue
        asset = await client.get(url if url.startswith("/") else f"/{url}")
        assert asset.status_code == 200, url
        assert asset.content, url


async def test_static_files_are_served_with_their_types(client: httpx.AsyncClient) -> None:
    kinds = {
        "/static/app.js": "text/javascript",
        "/static/style.css": "text/css",
        "/static/vendor/swagger-ui/swagger-ui-bundle.js": "text/javascript",
        "/static/vendor/redoc/redoc.standalone.js": "text/javascript",
        "/static/examples/heatmap.png": "image/png",
    }
    for path, kind in kinds.items():
        response = await client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith(kind), path
    assert (await client.get("/static/../settings.py")).status_code == 404


def file_fields(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each multipart field of each route's request body, by 'route.field'."""
    schemas = spec["components"]["schemas"]
    found = {}
    for path, item in spec["paths"].items():
        for operation in item.values():
            media = operation.get("requestBody", {}).get("content", {})
            if "multipart/form-data" not in media:
                continue
            ref = media["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[-1]
            for name, field in schemas[ref]["properties"].items():
                found[f"{path}.{name}"] = field
    return found


async def test_file_fields_are_binary_so_swagger_ui_shows_file_pickers(
    client: httpx.AsyncClient,
) -> None:
    fields = file_fields((await client.get("/openapi.json")).json())
    assert set(fields) == {
        "/score.images", "/rank.images", "/compare.image_a", "/compare.image_b",
        "/heatmap.image", "/regions.image",
    }  # fmt: skip
    for name, field in fields.items():
        single = field["items"] if field.get("type") == "array" else field
        assert single["type"] == "string", name
        assert single["format"] == "binary", name


async def test_each_error_status_has_its_own_example(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    codes: dict[str, set[str]] = {}
    for item in spec["paths"].values():
        for operation in item.values():
            for status, response in operation["responses"].items():
                if not status.startswith(("4", "5")):
                    continue
                examples = response["content"]["application/json"]["examples"]
                for example in examples.values():
                    assert example["value"]["error"]["message"]
                    codes.setdefault(status, set()).add(example["value"]["error"]["code"])
    assert {"400", "404", "413", "415", "422", "503", "504"} <= set(codes)
    owners = [code for status_codes in codes.values() for code in status_codes]
    assert len(owners) == len(set(owners)), codes  # no code is the example of two statuses
