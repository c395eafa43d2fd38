"""The same routes and response shapes for both architectures, through a real HTTP client:
/score, /compare, /rank, /heatmap, /regions and /model, against a LENA and a ViralNet-M
checkpoint (`@on_both_archs`); for ViralNet, /regions gives its crops and /heatmap outlines
them."""

from __future__ import annotations

import hashlib
import io
import math
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from model.checkpoint import load_network
from model.predict import predict

from .helpers import on_both_archs
from .imaging import jpeg, multipart
from .reference import network_input


def expected(folder: Path, data: bytes) -> tuple[float, np.ndarray | None]:
    """Score and transforms (K, 3) computed outside the app, from the checkpoint alone."""
    net, info = load_network(folder)
    with torch.no_grad():
        out = predict(net, network_input(data, info))
    return float(out.scores[0]), None if out.transforms is None else out.transforms[0].numpy()


@on_both_archs
async def test_score_compare_rank_answer_the_networks_own_numbers(
    client: httpx.AsyncClient, served_checkpoint: Path
) -> None:
    a, b, c = jpeg(120, 80, seed=1), jpeg(seed=2), jpeg(seed=3)
    scores = [expected(served_checkpoint, data)[0] for data in (a, b, c)]
    response = await client.post("/score", files=multipart(a))
    assert response.status_code == 200, response.text
    (entry,) = response.json()["results"]
    assert {"image_id", "score", "percentile", "heatmap_url"} <= entry.keys()
    assert entry["score"] == pytest.approx(scores[0], abs=1e-4)
    assert 0.0 <= entry["percentile"] <= 100.0
    files = {"image_a": ("a.jpg", a), "image_b": ("b.jpg", b)}
    body = (await client.post("/compare", files=files)).json()
    assert body["probability_a_more_viral"] == pytest.approx(
        1.0 / (1.0 + math.exp(-(scores[0] - scores[1]))), abs=1e-4
    )
    ranking = (await client.post("/rank", files=multipart(a, b, c))).json()["ranking"]
    assert [e["index"] for e in ranking] == sorted(range(3), key=lambda i: -scores[i])


@on_both_archs
async def test_model_route_names_the_architecture(client: httpx.AsyncClient, arch: str) -> None:
    body = (await client.get("/model")).json()
    assert body["checkpoint"]["arch"] == arch
    assert body["checkpoint"]["network"]["backbone"] == "tiny"


def expected_boxes(transforms: np.ndarray, width: int, height: int) -> list[tuple[int, ...]]:
    """Crop squares t -+ |s| in [-1, 1] coordinates as pixel boxes, written out independently."""
    boxes = []
    for s, tx, ty in transforms:
        x0 = max(0, math.floor((tx - abs(s) + 1) / 2 * width))
        x1 = min(width, math.ceil((tx + abs(s) + 1) / 2 * width))
        y0 = max(0, math.floor((ty - abs(s) + 1) / 2 * height))
        y1 = min(height, math.ceil((ty + abs(s) + 1) / 2 * height))
        boxes.append((x0, y0, x1 - x0, y1 - y0))
    return boxes


@on_both_archs
async def test_regions_are_the_crops_for_viralnet_and_map_regions_for_lena(
    client: httpx.AsyncClient, served_checkpoint: Path
) -> None:
    data = jpeg(160, 100, seed=4)
    _, transforms = expected(served_checkpoint, data)
    posted = await client.post("/regions", files={"image": ("x.jpg", data)})
    assert posted.status_code == 200, posted.text
    image_id = hashlib.sha256(data).hexdigest()
    got = await client.get("/regions", params={"image_id": image_id})
    assert got.json() == posted.json()
    regions: list[dict[str, Any]] = posted.json()["regions"]
    assert all({"x", "y", "width", "height", "peak", "mean"} <= r.keys() for r in regions)
    if transforms is None:
        assert all(r["scale"] is None for r in regions)
        return
    assert [r["scale"] for r in regions] == [1.0, 0.5, 0.25]
    boxes = [(r["x"], r["y"], r["width"], r["height"]) for r in regions]
    assert boxes == expected_boxes(transforms, 160, 100)
    assert len(set(boxes)) == 3  # the three levels crop differently


@on_both_archs
async def test_heatmap_outlines_the_crops_only_for_viralnet(
    client: httpx.AsyncClient, served_checkpoint: Path
) -> None:
    data = jpeg(160, 100, seed=5)
    response = await client.post("/heatmap", params={"mode": "map"}, files={"image": ("x", data)})
    assert response.status_code == 200, response.text
    with Image.open(io.BytesIO(response.content)) as image:
        assert image.size == (160, 100)
        rgb = np.asarray(image.convert("RGB"))
    white = np.all(rgb == 255, axis=-1)  # the full-resolution crop's outline; jet has no white
    _, transforms = expected(served_checkpoint, data)
    if transforms is None:
        assert not white.any()
        return
    x, y, w, h = expected_boxes(transforms, 160, 100)[0]
    assert white[y, x : x + w].all()  # its top edge
    assert white[y : y + h, x].all()  # its left edge
