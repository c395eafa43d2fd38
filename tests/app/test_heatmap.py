"""GET/POST /heatmap and /regions: sizes, formats, modes, the store's bounds and expiry."""

from __future__ import annotations

import asyncio
import hashlib
import io
import threading
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from PIL import Image

from .helpers import Serve, batches, wait_until
from .imaging import encode, jpeg, multipart, photo


def pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


async def scored_id(client: httpx.AsyncClient, data: bytes) -> str:
    response = await client.post("/score", files=multipart(data))
    assert response.status_code == 200, response.text
    image_id: str = response.json()["results"][0]["image_id"]
    return image_id


async def heatmap(client: httpx.AsyncClient, image_id: str, **params: Any) -> httpx.Response:
    return await client.get("/heatmap", params={"image_id": image_id, **params})


async def test_a_heatmap_is_a_png_at_the_images_own_size(client: httpx.AsyncClient) -> None:
    image_id = await scored_id(client, jpeg(150, 70, seed=1))
    response = await heatmap(client, image_id)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(response.content)) as image:
        assert (image.format, image.size, image.mode) == ("PNG", (150, 70), "RGB")


async def test_jpeg_format(client: httpx.AsyncClient) -> None:
    image_id = await scored_id(client, jpeg(100, 90, seed=2))
    response = await heatmap(client, image_id, format="jpeg")
    assert response.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(response.content)) as image:
        assert (image.format, image.size) == ("JPEG", (100, 90))


async def test_alpha_blends_between_the_photo_and_the_plain_map(
    client: httpx.AsyncClient,
) -> None:
    original = photo(120, 90, seed=3)
    image_id = await scored_id(client, encode(original, "PNG"))
    photo_only = pixels((await heatmap(client, image_id, alpha=0.0)).content)
    np.testing.assert_array_equal(photo_only, original)
    map_only = pixels((await heatmap(client, image_id, alpha=1.0)).content)
    plain = pixels((await heatmap(client, image_id, mode="map")).content)
    np.testing.assert_array_equal(map_only, plain)
    half = pixels((await heatmap(client, image_id)).content).astype(int)
    assert np.abs(half - (original.astype(int) + plain) / 2).max() <= 1


async def test_plain_map_uses_the_requested_opencv_colormap(client: httpx.AsyncClient) -> None:
    image_id = await scored_id(client, jpeg(64, 64, seed=4))
    for name, code in [("jet", cv2.COLORMAP_JET), ("viridis", cv2.COLORMAP_VIRIDIS)]:
        plain = pixels((await heatmap(client, image_id, mode="map", colormap=name)).content)
        lut = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], code)[:, 0, ::-1]
        colours = {tuple(c) for c in lut.tolist()}
        assert {tuple(c) for c in plain.reshape(-1, 3).tolist()} <= colours
        assert len({tuple(c) for c in plain.reshape(-1, 3).tolist()}) > 10


async def test_colormap_names_are_accepted_in_any_case(client: httpx.AsyncClient) -> None:
    image_id = await scored_id(client, jpeg(64, 48, seed=4))
    lower = await heatmap(client, image_id, mode="map", colormap="jet")
    upper = await heatmap(client, image_id, mode="map", colormap="JET")
    assert upper.status_code == 200
    assert upper.content == lower.content


async def test_a_12_megapixel_photos_heatmap_is_bounded_by_default(serve: Serve) -> None:
    """Review defect: GET /heatmap answered a 4000x3000 PNG (18 MB for a real photo)."""
    y, x = np.mgrid[0:3000, 0:4000]
    smooth = np.stack([x * 255 // 3999, y * 255 // 2999, (x + y) % 256], -1).astype(np.uint8)
    async with serve(request_deadline_s=120.0) as (_, client):  # 12 MP on a busy 2-core CPU
        image_id = await scored_id(client, encode(smooth, "JPEG", quality=80))
        default = await heatmap(client, image_id)
        with Image.open(io.BytesIO(default.content)) as image:
            assert image.size == (1600, 1200)
        full = await heatmap(client, image_id, max_side=4000, mode="map")
        with Image.open(io.BytesIO(full.content)) as image:
            assert image.size == (4000, 3000)


async def test_max_side_scales_the_heatmap_down(client: httpx.AsyncClient) -> None:
    image_id = await scored_id(client, jpeg(150, 70, seed=2))
    for params, size in [
        ({"max_side": 50}, (50, 23)),
        ({"max_side": 50, "mode": "map"}, (50, 23)),
        ({"max_side": 500}, (150, 70)),  # never scaled up
    ]:
        response = await heatmap(client, image_id, **params)
        assert response.status_code == 200, response.text
        with Image.open(io.BytesIO(response.content)) as image:
            assert image.size == size, params
    assert (await heatmap(client, image_id, max_side=0)).status_code == 422


async def test_bad_heatmap_parameters_are_422(client: httpx.AsyncClient) -> None:
    image_id = await scored_id(client, jpeg(seed=5))
    bad: list[dict[str, Any]] = [
        {"colormap": "nope"},
        {"format": "gif"},
        {"alpha": 2},
        {"mode": "x"},
    ]
    for params in bad:
        response = await heatmap(client, image_id, **params)
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "invalid_request"
    assert (await client.get("/heatmap", params={"image_id": "xyz"})).status_code == 422


async def test_an_unknown_id_is_404(client: httpx.AsyncClient) -> None:
    response = await heatmap(client, hashlib.sha256(b"never scored").hexdigest())
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_image_id"


async def test_ids_expire(serve: Serve) -> None:
    async with serve(heatmap_ttl_s=0.3) as (_, client):
        image_id = await scored_id(client, jpeg(seed=6))
        assert (await heatmap(client, image_id)).status_code == 200
        await asyncio.sleep(0.4)
        response = await heatmap(client, image_id)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "unknown_image_id"


async def test_the_store_keeps_at_most_max_items(serve: Serve) -> None:
    async with serve(heatmap_store_max_items=2) as (app, client):
        ids = [await scored_id(client, jpeg(seed=s)) for s in range(3)]
        statuses = [(await heatmap(client, i)).status_code for i in ids]
        assert statuses == [404, 200, 200]
        assert len(app.state.service.store) == 2


async def test_the_store_keeps_at_most_max_bytes(serve: Serve) -> None:
    images = [jpeg(160, 120, seed=s) for s in range(4)]
    budget = len(images[2]) + len(images[3]) + 2 * 4096  # room for two uploads and their maps
    async with serve(heatmap_store_max_bytes=budget) as (app, client):
        ids = [await scored_id(client, data) for data in images]
        statuses = [(await heatmap(client, i)).status_code for i in ids]
        assert statuses == [404, 404, 200, 200]
        assert app.state.service.store.nbytes <= budget


async def test_an_image_too_large_to_keep_has_no_heatmap_url(serve: Serve) -> None:
    small, large = jpeg(48, 32, seed=1), jpeg(400, 300, seed=2)
    async with serve(heatmap_store_max_bytes=len(small) + 4096) as (_, client):
        response = await client.post("/score", files=multipart(small, large))
        assert response.status_code == 200, response.text
        kept, too_large = response.json()["results"]
        assert kept["heatmap_url"] == f"/heatmap?image_id={kept['image_id']}"
        assert (await client.get(kept["heatmap_url"])).status_code == 200
        assert too_large["heatmap_url"] is None
        assert too_large["score"] is not None
        assert (await heatmap(client, too_large["image_id"])).status_code == 404


async def test_drawings_beyond_the_bound_are_503_and_scoring_goes_on(serve: Serve) -> None:
    async with serve(decode_threads=2) as (app, client):
        assert app.state.settings.max_concurrent_renders == 1  # decode_threads - 1
        service, slots = app.state.service, app.state.service.render_slots
        image_id = await scored_id(client, jpeg(seed=9))
        release = threading.Event()
        drawing = asyncio.create_task(service.render(release.wait, 30.0))  # holds the slot
        await wait_until(lambda: slots.in_use == 1, timeout=10.0)
        try:
            for refused in [
                await heatmap(client, image_id, mode="map"),
                await client.get("/regions", params={"image_id": image_id}),
                await client.post("/heatmap", files={"image": ("a.jpg", jpeg(seed=1))}),
                await client.post("/regions", files={"image": ("a.jpg", jpeg(seed=1))}),
            ]:
                assert refused.status_code == 503, refused.text
                assert refused.json()["error"]["code"] == "render_busy"
                assert "retry-after" in refused.headers
            # The POST routes are refused before their forward pass: nothing was scored.
            assert batches(app) == (1, 1)
            # The drawing holds one of the two decoding threads; scoring has the other.
            assert (await client.post("/score", files=multipart(jpeg(seed=2)))).status_code == 200
        finally:
            release.set()
        assert await drawing is True
        await wait_until(
            lambda: slots.in_use == 0, timeout=10.0
        )  # given back once the drawing ends
        by_id = await client.get("/regions", params={"image_id": image_id})
        assert by_id.status_code == 200


async def test_post_heatmap_is_stateless(client: httpx.AsyncClient) -> None:
    data = jpeg(130, 60, seed=7)
    response = await client.post(
        "/heatmap", files={"image": ("a.jpg", data)}, params={"mode": "map"}
    )
    assert response.status_code == 200
    assert response.headers["x-image-id"] == hashlib.sha256(data).hexdigest()
    with Image.open(io.BytesIO(response.content)) as image:
        assert image.size == (130, 60)
    assert (await heatmap(client, response.headers["x-image-id"])).status_code == 404
    bad = await client.post("/heatmap", files={"image": ("a.txt", b"text")})
    assert (bad.status_code, bad.json()["error"]["code"]) == (415, "unsupported_format")


async def test_regions_are_boxes_inside_the_image(client: httpx.AsyncClient) -> None:
    data = jpeg(160, 120, seed=8)
    posted = await client.post("/regions", files={"image": ("a.jpg", data)})
    assert posted.status_code == 200, posted.text
    body = posted.json()
    assert body["image_id"] == hashlib.sha256(data).hexdigest()
    assert (body["width"], body["height"], body["threshold"]) == (160, 120, 0.2)
    by_id = await client.get("/regions", params={"image_id": body["image_id"], "threshold": 0.2})
    assert by_id.json() == body
    for box in body["regions"]:
        assert box["x"] >= 0
        assert box["x"] + box["width"] <= 160
        assert box["y"] >= 0
        assert box["y"] + box["height"] <= 120
        assert box["peak"] >= box["mean"] > 0
    peaks = [box["peak"] for box in body["regions"]]
    assert peaks == sorted(peaks, reverse=True)
    assert body["regions"], "the tiny network's map has a positive peak on this photo"
    top = body["regions"][0]
    strict = await client.get("/regions", params={"image_id": body["image_id"], "threshold": 1.0})
    maxima = strict.json()["regions"]
    assert maxima  # the map's maximum itself always qualifies
    for box in maxima:  # only pixels at the maximum: nested inside the highest-peak box
        assert box["peak"] == pytest.approx(top["peak"], rel=1e-6)
        assert box["mean"] == pytest.approx(box["peak"], rel=1e-6)
        assert top["x"] <= box["x"]
        assert box["x"] + box["width"] <= top["x"] + top["width"]
        assert top["y"] <= box["y"]
        assert box["y"] + box["height"] <= top["y"] + top["height"]


@pytest.mark.parametrize("path", ["/heatmap", "/regions"])
async def test_get_by_unknown_id_is_404(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path, params={"image_id": "0" * 64})
    assert response.status_code == 404
