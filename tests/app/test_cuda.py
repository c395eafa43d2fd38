"""The service on CUDA: float32 (and float16 autocast), CUDA graphs, pinned uploads and nvJPEG
decode give the CPU reference's scores and order, for both architectures. Runs only where
torch sees a GPU (CI has none; `bench/gpu_run.sh` runs it on a lent machine)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.checkpoint import CheckpointInfo, Network

from .helpers import Serve, on_both_archs
from .imaging import encode, jpeg, multipart, photo
from .reference import expected_score

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@on_both_archs
@pytest.mark.parametrize(
    ("gpu_decode", "precision", "tolerance"),
    [
        # The CPU's pixels in IEEE float32: the CPU's scores.
        (False, "float32", 0.0),
        # nvJPEG's pixels (within ~2 levels of the CPU decoder's) or the float16 trunk move
        # the scores a little: within 5% of their spread, and no clear pair swaps its order.
        (True, "float32", 0.05),
        (False, "float16", 0.05),
    ],
    ids=["float32", "nvjpeg", "float16"],
)
async def test_a_cuda_service_answers_the_cpu_references_scores(
    serve: Serve,
    served_reference: tuple[Network, CheckpointInfo],
    gpu_decode: bool,
    precision: str,
    tolerance: float,
) -> None:
    uploads = [jpeg(640, 480, seed=s) for s in range(7)] + [encode(photo(300, 200, 9), "PNG")]
    expected = np.array([expected_score(served_reference, data) for data in uploads])
    async with serve(device="cuda", gpu_decode=gpu_decode, cuda_precision=precision) as (
        app,
        client,
    ):
        assert (app.state.service.gpu_decode is not None) == gpu_decode
        assert app.state.service.engine.graphs is not None
        response = await client.post("/score", files=multipart(*uploads))
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        scores = np.array([entry["score"] for entry in results])
        spread = float(np.ptp(expected))
        assert np.abs(scores - expected).max() <= tolerance * spread + 1e-4, (scores, expected)
        clear = np.abs(expected[:, None] - expected[None, :]) > 2 * tolerance * spread
        agree = np.sign(scores[:, None] - scores[None, :]) == np.sign(
            expected[:, None] - expected[None, :]
        )
        assert agree[clear].all()
        heatmap = await client.get(results[0]["heatmap_url"])
        assert heatmap.status_code == 200
        assert heatmap.headers["content-type"] == "image/png"
        compare = await client.post(
            "/compare", files={"image_a": ("a.jpg", uploads[0]), "image_b": ("b.jpg", uploads[1])}
        )
        assert compare.status_code == 200, compare.text
        assert compare.json()["a"]["score"] == pytest.approx(scores[0], abs=1e-3)
