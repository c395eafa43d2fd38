"""POST /score, /rank and /compare: the contract, the numbers, batching and ordering."""

from __future__ import annotations

import asyncio
import hashlib
import math
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from model.checkpoint import CheckpointInfo, Network

from .helpers import Serve, batches, batches_up_to, on_both_archs, wait_until
from .imaging import encode, jpeg, multipart, photo
from .reference import expected_score

Reference = tuple[Network, CheckpointInfo]


async def score_one(client: httpx.AsyncClient, data: bytes) -> dict[str, Any]:
    response = await client.post("/score", files=multipart(data))
    assert response.status_code == 200, response.text
    (entry,) = response.json()["results"]
    return entry


def metric_value(text: str, name: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise AssertionError(f"{name} not in /metrics")


async def test_score_answers_the_contract_fields_and_the_networks_own_numbers(
    client: httpx.AsyncClient, reference: Reference
) -> None:
    data = jpeg(120, 80, seed=3)
    entry = await score_one(client, data)
    image_id = hashlib.sha256(data).hexdigest()
    assert {"image_id", "score", "percentile", "heatmap_url"} <= entry.keys()
    assert entry["image_id"] == image_id
    assert entry["score"] == pytest.approx(expected_score(reference, data), abs=1e-4)
    calibration = reference[1].calibration
    assert calibration is not None
    assert 0.0 <= entry["percentile"] <= 100.0
    assert entry["percentile"] == pytest.approx(calibration.percentile(entry["score"]), abs=1e-6)
    assert entry["heatmap_url"] == f"/heatmap?image_id={image_id}"
    assert (entry["width"], entry["height"]) == (120, 80)
    assert (await client.get(entry["heatmap_url"])).status_code == 200


async def test_percentiles_follow_the_order_of_scores(client: httpx.AsyncClient) -> None:
    response = await client.post("/score", files=multipart(*(jpeg(seed=s) for s in range(6))))
    entries = sorted(response.json()["results"], key=lambda e: e["score"])
    percentiles = [e["percentile"] for e in entries]
    assert percentiles == sorted(percentiles)
    assert len({round(e["score"], 6) for e in entries}) > 1  # the images do score differently


@on_both_archs
async def test_a_multi_image_request_answers_in_upload_order(client: httpx.AsyncClient) -> None:
    images = [jpeg(80 + 8 * s, 64, seed=s) for s in range(5)]
    together = (await client.post("/score", files=multipart(*images))).json()["results"]
    alone = [await score_one(client, data) for data in images]
    assert [e["image_id"] for e in together] == [hashlib.sha256(d).hexdigest() for d in images]
    assert [e["width"] for e in together] == [80 + 8 * s for s in range(5)]
    for shared, single in zip(together, alone, strict=True):
        assert shared["score"] == pytest.approx(single["score"], abs=1e-5)


@on_both_archs
async def test_concurrent_requests_share_one_batch(serve: Serve) -> None:
    async with serve(max_wait_ms=300.0, batch_close_when_idle=False, max_batch_size=8) as (
        _,
        client,
    ):
        first, second = await asyncio.gather(
            client.post("/score", files=multipart(jpeg(seed=1))),
            client.post("/score", files=multipart(jpeg(seed=2))),
        )
        assert first.status_code == second.status_code == 200
        metrics = (await client.get("/metrics")).text
        assert metric_value(metrics, "viraliency_batch_size_count") == 1
        assert metric_value(metrics, "viraliency_batch_size_sum") == 2


@on_both_archs
async def test_by_default_a_batch_closes_once_nothing_else_is_admitted(serve: Serve) -> None:
    """The default batch closing: a lone request does not wait out max_wait_ms for company,
    but a request's own images, admitted together, still share one forward pass."""
    async with serve(max_wait_ms=20_000.0, max_batch_size=8, request_deadline_s=15.0) as (
        app,
        client,
    ):
        assert app.state.settings.batch_close_when_idle
        started = asyncio.get_running_loop().time()
        lone = await client.post("/score", files=multipart(jpeg(seed=1)))
        several = await client.post("/score", files=multipart(*(jpeg(seed=s) for s in range(4))))
        assert asyncio.get_running_loop().time() - started < 10.0  # not the 20 s window
        assert lone.status_code == several.status_code == 200
        assert batches(app) == (2, 5)  # a batch of 1, then one of 4
        assert batches_up_to(app, 1) == 1


@on_both_archs
async def test_a_batch_closes_at_max_batch_size(serve: Serve) -> None:
    async with serve(max_wait_ms=300.0, batch_close_when_idle=False, max_batch_size=2) as (
        app,
        client,
    ):
        response = await client.post("/score", files=multipart(*(jpeg(seed=s) for s in range(5))))
        assert response.status_code == 200
        assert batches(app) == (3, 5)  # 2 + 2 + 1
        assert batches_up_to(app, 1) == 1


@on_both_archs
async def test_a_requests_first_image_is_scored_while_the_next_still_decodes(serve: Serve) -> None:
    """Each image is queued as soon as it is decoded: the small JPEG's forward pass does not
    wait for the large PNG behind it (one decoding thread, so they decode in order)."""
    slow = encode(photo(2400, 2400, seed=3), "PNG")  # no reduced decode for PNG: tens of ms
    async with serve(decode_threads=1, max_wait_ms=2.0, max_batch_size=8) as (app, client):
        response = await client.post("/score", files=multipart(jpeg(seed=1), slow))
        assert response.status_code == 200, response.text
        assert batches(app) == (2, 2)  # decoded first, then queued together, would be (1, 2)


@on_both_archs
async def test_a_bad_upload_cancels_the_images_of_its_request_already_queued(serve: Serve) -> None:
    async with serve(
        decode_threads=1, max_wait_ms=500.0, batch_close_when_idle=False, max_batch_size=8
    ) as (app, client):
        files = multipart(jpeg(seed=1), jpeg(seed=2), b"not an image")
        refused = await client.post("/score", files=files)
        assert refused.status_code == 415, refused.text
        batcher = app.state.service.batcher
        await wait_until(lambda: batcher.pending == 0)  # the held batch closed, slots freed
        assert batches(app) == (0, 0)  # the two decoded images never reached the network
        scored = await client.post("/score", files=multipart(jpeg(seed=3)))
        assert scored.status_code == 200, scored.text
        assert batches(app) == (1, 1)


async def test_compare_gives_the_sigmoid_of_the_score_difference(
    client: httpx.AsyncClient, reference: Reference
) -> None:
    a, b = jpeg(seed=10), jpeg(seed=11)
    response = await client.post(
        "/compare", files={"image_a": ("a.jpg", a), "image_b": ("b.jpg", b)}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    score_a, score_b = expected_score(reference, a), expected_score(reference, b)
    assert body["a"]["score"] == pytest.approx(score_a, abs=1e-4)
    assert body["b"]["score"] == pytest.approx(score_b, abs=1e-4)
    assert body["a"]["image_id"] == hashlib.sha256(a).hexdigest()
    assert body["probability_a_more_viral"] == pytest.approx(
        1.0 / (1.0 + math.exp(-(score_a - score_b))), abs=1e-4
    )
    assert body["winner"] == ("a" if body["a"]["score"] >= body["b"]["score"] else "b")
    swapped = await client.post(
        "/compare", files={"image_a": ("b.jpg", b), "image_b": ("a.jpg", a)}
    )
    assert swapped.json()["probability_a_more_viral"] == pytest.approx(
        1.0 - body["probability_a_more_viral"], abs=1e-6
    )
    assert swapped.json()["winner"] != body["winner"]


async def test_rank_orders_images_by_score(client: httpx.AsyncClient) -> None:
    images = [jpeg(seed=s) for s in range(20, 26)]
    response = await client.post("/rank", files=multipart(*images))
    assert response.status_code == 200, response.text
    ranking = response.json()["ranking"]
    alone = [(await score_one(client, data))["score"] for data in images]
    assert [e["rank"] for e in ranking] == list(range(1, 7))
    assert sorted(e["index"] for e in ranking) == list(range(6))
    assert [e["index"] for e in ranking] == sorted(range(6), key=lambda i: -alone[i])
    for entry in ranking:
        assert entry["image_id"] == hashlib.sha256(images[entry["index"]]).hexdigest()


@on_both_archs
async def test_an_image_that_fails_in_the_network_fails_only_its_own_request(
    serve: Serve, served_reference: Reference, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No real upload makes the forward pass fail (every image reaches it as S x S x 3 uint8),
    so the failure is injected into the engine, below the code under test: the batcher's
    splitting, the service and the routes all run for real."""
    black = encode(np.zeros((60, 80, 3), np.uint8), "PNG")
    good = [jpeg(seed=s) for s in (30, 31, 32)]
    async with serve(max_wait_ms=300.0, batch_close_when_idle=False, max_batch_size=8) as (
        app,
        client,
    ):
        engine = app.state.service.engine
        real_predict = engine.predict

        def fails_on_black(images: list[np.ndarray], yield_cores: int = 0) -> list[Any]:
            if any(not image.any() for image in images):
                raise RuntimeError("injected: the network fails on an all-black image")
            return real_predict(images, yield_cores)

        monkeypatch.setattr(engine, "predict", fails_on_black)
        first, failing, pair = await asyncio.gather(
            client.post("/score", files=multipart(good[0])),
            client.post("/score", files=multipart(black)),
            client.post("/score", files=multipart(good[1], good[2])),
        )
        assert batches(app) == (1, 4)  # one shared batch
        assert failing.status_code == 500
        assert failing.json()["error"]["code"] == "internal_error"
        assert "injected" not in failing.text
        assert first.status_code == pair.status_code == 200
        scores = [e["score"] for r in (first, pair) for e in r.json()["results"]]
        expected = [expected_score(served_reference, data) for data in good]
        assert scores == pytest.approx(expected, abs=1e-4)
        assert (await client.get("/readyz")).status_code == 200
