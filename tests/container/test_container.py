"""The built container, over real HTTP: score, compare and heatmap a real image.

`.ci/container` starts the image with `docker compose up --wait` and runs this module with
VIRALIENCY_CONTAINER_URL set (e.g. http://127.0.0.1:8000); without it every test is skipped.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

from tests.app.imaging import encode, photo

URL = os.environ.get("VIRALIENCY_CONTAINER_URL", "")
# The first requests on a CPU-only CI machine run the real network cold.
TIMEOUT_S = 60.0

pytestmark = [
    pytest.mark.container,
    pytest.mark.skipif(
        not URL,
        reason="no container to test: set VIRALIENCY_CONTAINER_URL (e.g. http://127.0.0.1:8000) "
        "to a running `docker compose up`; .ci/container does this",
    ),
]

# Two sizes that are neither square nor the network's input size, so resizing shows.
JPEG = encode(photo(320, 240, seed=1), "JPEG", quality=90)
PNG = encode(photo(200, 260, seed=2), "PNG")


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(base_url=URL, timeout=TIMEOUT_S) as c:
        yield c


def check_entry(entry: dict[str, object], data: bytes, width: int, height: int) -> None:
    assert entry["image_id"] == hashlib.sha256(data).hexdigest()
    assert isinstance(entry["score"], float)
    assert math.isfinite(entry["score"])
    percentile = entry["percentile"]
    assert percentile is None or (isinstance(percentile, float) and 0.0 <= percentile <= 100.0)
    assert entry["heatmap_url"] == f"/heatmap?image_id={entry['image_id']}"
    assert (entry["width"], entry["height"]) == (width, height)


def test_ready(client: httpx.Client) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ready"


def test_score_then_heatmap(client: httpx.Client) -> None:
    files = [("images", ("a.jpg", JPEG, "image/jpeg")), ("images", ("b.png", PNG, "image/png"))]
    response = client.post("/score", files=files)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == 2
    check_entry(results[0], JPEG, 320, 240)
    check_entry(results[1], PNG, 200, 260)

    for entry in results:
        heatmap = client.get(entry["heatmap_url"])
        assert heatmap.status_code == 200, heatmap.text
        assert heatmap.headers["content-type"] == "image/png"
        image = Image.open(io.BytesIO(heatmap.content))
        assert image.format == "PNG"
        assert image.size == (entry["width"], entry["height"])
        image.load()  # the whole file decodes, not just its header


def test_compare(client: httpx.Client) -> None:
    files = {"image_a": ("a.jpg", JPEG, "image/jpeg"), "image_b": ("b.png", PNG, "image/png")}
    response = client.post("/compare", files=files)
    assert response.status_code == 200, response.text
    body = response.json()
    check_entry(body["a"], JPEG, 320, 240)
    check_entry(body["b"], PNG, 200, 260)
    difference = body["a"]["score"] - body["b"]["score"]
    assert body["probability_a_more_viral"] == pytest.approx(1 / (1 + math.exp(-difference)))
    assert body["winner"] == ("a" if difference >= 0 else "b")


def test_unknown_heatmap_is_a_json_404(client: httpx.Client) -> None:
    response = client.get("/heatmap", params={"image_id": "0" * 64})
    assert response.status_code == 404
    assert "error" in response.json()
