"""`VIRALIENCY_INFERENCE_PROCESS`: the forward pass in a child process of its own. The same
numbers as in-process, a killed child replaced without losing its batch, the child gone after
shutdown, and a shutdown that times out on a stuck batch kills the child without replacing it."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from app.inference_process import EngineProcess, InferenceProcessError
from app.settings import Settings
from model.checkpoint import CheckpointInfo, Network

from .helpers import Serve, on_both_archs, wait_until
from .imaging import jpeg, multipart
from .reference import expected_score

Reference = tuple[Network, CheckpointInfo]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@on_both_archs
async def test_the_child_scores_like_the_network_and_exits_at_shutdown(
    serve: Serve, served_reference: Reference, arch: str
) -> None:
    async with serve(inference_process=True) as (app, client):
        runner = app.state.service.runner
        assert isinstance(runner, EngineProcess)
        assert runner.pid is not None
        assert runner.pid != os.getpid()
        uploads = [jpeg(120, 80, seed=seed) for seed in range(6)]
        responses = await asyncio.gather(
            *(client.post("/score", files=multipart(data)) for data in uploads)
        )
        for data, response in zip(uploads, responses, strict=True):
            assert response.status_code == 200, response.text
            (entry,) = response.json()["results"]
            assert entry["score"] == pytest.approx(expected_score(served_reference, data), abs=1e-4)
        heatmap = await client.get(entry["heatmap_url"])  # the map came back over the pipe
        assert heatmap.status_code == 200
        assert heatmap.headers["content-type"] == "image/png"
        regions = await client.get("/regions", params={"image_id": entry["image_id"]})
        assert regions.status_code == 200, regions.text  # ViralNet's crops: the local copy
        scales = [region["scale"] for region in regions.json()["regions"]]
        assert scales == [1.0, 0.5, 0.25] if arch == "viralnet-m" else set(scales) <= {None}
        pid = runner.pid
    assert gone(pid)


async def test_a_child_killed_mid_batch_is_replaced_and_the_batch_still_answered(
    serve: Serve, reference: Reference
) -> None:
    async with serve(inference_process=True, request_deadline_s=120.0) as (app, client):
        runner = app.state.service.runner
        first = runner.pid
        os.kill(first, signal.SIGSTOP)  # the child will hold the batch it is sent
        data = jpeg(seed=5)
        request = asyncio.create_task(client.post("/score", files=multipart(data)))
        await wait_until(lambda: app.state.service.batcher.pending == 1)
        await asyncio.sleep(0.2)  # the batcher has sent it and waits for the answer
        os.kill(first, signal.SIGKILL)
        response = await request
        assert response.status_code == 200, response.text
        (entry,) = response.json()["results"]
        assert entry["score"] == pytest.approx(expected_score(reference, data), abs=1e-4)
        assert runner.restarts == 1
        assert runner.pid != first
        again = await client.post("/score", files=multipart(jpeg(seed=6)))
        assert again.status_code == 200
        assert runner.restarts == 1


def test_close_kills_a_child_stuck_in_a_batch_and_starts_no_other(
    settings_for: Callable[..., Settings],
) -> None:
    """A drain that timed out: the batch still in the child fails (the service answers it
    500), and shutdown does not start a new child for it."""
    runner = EngineProcess(settings_for())
    stuck = runner.pid
    assert stuck is not None
    os.kill(stuck, signal.SIGSTOP)
    blank = np.zeros((32, 32, 3), dtype=np.uint8)
    with ThreadPoolExecutor(1) as pool:
        batch = pool.submit(runner.predict, [blank])
        time.sleep(0.2)  # the call holds the child
        runner.close(timeout=0.5)
        with pytest.raises(InferenceProcessError):
            batch.result(timeout=10)
    assert gone(stuck)
    assert runner.restarts == 0
