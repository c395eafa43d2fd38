"""`VIRALIENCY_INFERENCE_PROCESS`: the forward pass in a child process of its own. The same
numbers as in-process, a killed child replaced without losing its batch, and the child gone
after shutdown."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from app.inference_process import EngineProcess
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
    serve: Serve, served_reference: Reference
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
