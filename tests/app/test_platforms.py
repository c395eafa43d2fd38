"""`?platform=` on a checkpoint with per-platform heads, through a real HTTP client and the CLI:
each platform's own head and calibration, the gate's mixture by default, clear 422s."""

from __future__ import annotations

import json
import math
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from app.settings import Settings
from cli.main import cli
from model.checkpoint import Calibration, CheckpointInfo, load_network, save_checkpoint
from tests.model.test_platforms import platform_net

from .helpers import TRAINING, running
from .imaging import jpeg, multipart
from .reference import network_input

PLATFORMS = {"auto": -1, "a": 0, "b": 1}


@pytest.fixture(scope="module")
def platform_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_platform_checkpoint(tmp_path_factory.mktemp("platforms"))


def save_platform_checkpoint(folder: Path) -> Path:
    """The tiny two-platform network (a, b) with a calibration table per head."""
    net, _, _ = platform_net()
    info = CheckpointInfo(
        net.config,
        net.preprocessing,
        Calibration.from_scores(np.linspace(-1, 1, 11)),
        training=TRAINING,
        platform_calibration={
            "a": Calibration.from_scores(np.linspace(-3, 0, 11)),
            "b": Calibration.from_scores(np.linspace(0, 3, 11)),
        },
    )
    save_checkpoint(net, info, folder)
    return folder


def expected(folder: Path, data: bytes, platform: str) -> tuple[float, float | None]:
    """The named head's score (or the gate's mixture) and its percentile, from the files."""
    net, info = load_network(folder)
    with torch.no_grad():
        scores, _ = net.viraliency(
            network_input(data, info), platform=torch.tensor([PLATFORMS[platform]])
        )
    score = float(scores[0])
    calibration = info.calibration_for(None if platform == "auto" else platform)
    return score, None if calibration is None else calibration.percentile(score)


async def test_each_platform_gets_its_own_head_and_percentile(platform_checkpoint: Path) -> None:
    images = [jpeg(seed=1), jpeg(120, 80, seed=2)]
    settings = Settings(checkpoint=platform_checkpoint, device="cpu", decode_threads=2)
    async with running(settings) as (_, client):
        answers = {}
        for platform in ("a", "b", "auto", None):
            params = {} if platform is None else {"platform": platform}
            response = await client.post("/score", files=multipart(*images), params=params)
            assert response.status_code == 200, response.text
            answers[platform] = response.json()["results"]
        compare = await client.post(
            "/compare",
            files=[("image_a", ("a.jpg", images[0])), ("image_b", ("b.jpg", images[1]))],
            params={"platform": "b"},
        )
        heatmap = await client.post(
            "/heatmap", files={"image": ("a.jpg", images[0])}, params={"platform": "a"}
        )
    for platform in ("a", "b", "auto"):
        for data, entry in zip(images, answers[platform], strict=True):
            score, percentile = expected(platform_checkpoint, data, platform)
            assert math.isclose(entry["score"], score, rel_tol=1e-4, abs_tol=1e-5)
            assert percentile is not None
            assert math.isclose(entry["percentile"], percentile, abs_tol=1e-3)
    assert answers[None] == answers["auto"]
    assert answers["a"][0]["score"] != answers["b"][0]["score"]  # the heads differ
    b_scores = [expected(platform_checkpoint, data, "b")[0] for data in images]
    probability = 1 / (1 + math.exp(-(b_scores[0] - b_scores[1])))
    assert math.isclose(compare.json()["probability_a_more_viral"], probability, rel_tol=1e-4)
    assert heatmap.status_code == 200
    a_score = expected(platform_checkpoint, images[0], "a")[0]
    assert math.isclose(float(heatmap.headers["X-Viraliency-Score"]), a_score, rel_tol=1e-4)


async def test_an_unknown_platform_is_a_422_naming_the_known_ones(
    platform_checkpoint: Path,
) -> None:
    settings = Settings(checkpoint=platform_checkpoint, device="cpu", decode_threads=2)
    async with running(settings) as (_, client):
        response = await client.post(
            "/score", files=multipart(jpeg()), params={"platform": "tiktok"}
        )
        after = await client.post("/score", files=multipart(jpeg()))
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "unknown_platform"
    assert "'tiktok' is unknown" in error["message"]
    assert "a, b" in error["message"]
    assert error["accepted"] == ["auto", "a", "b"]
    assert after.status_code == 200  # the refused request gave its queue slot back


async def test_a_single_head_checkpoint_refuses_a_platform(client: httpx.AsyncClient) -> None:
    response = await client.post("/score", files=multipart(jpeg()), params={"platform": "a"})
    assert response.status_code == 422
    assert "one head for every image" in response.json()["error"]["message"]
    auto = await client.post("/score", files=multipart(jpeg()), params={"platform": "auto"})
    assert auto.status_code == 200


def test_cli_scores_with_the_named_platform(platform_checkpoint: Path, tmp_path: Path) -> None:
    image = tmp_path / "a.jpg"
    image.write_bytes(jpeg(seed=1))
    out = tmp_path / "rows.csv"
    args = ["score", str(image), "--checkpoint", str(platform_checkpoint), "--out", str(out)]
    result = CliRunner().invoke(cli, [*args, "--platform", "b"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    row = out.read_text().splitlines()[1].split(",")
    score, percentile = expected(platform_checkpoint, image.read_bytes(), "b")
    assert math.isclose(float(row[2]), score, rel_tol=1e-4, abs_tol=1e-5)
    assert percentile is not None
    assert math.isclose(float(row[3]), percentile, abs_tol=1e-2)
    bad = CliRunner().invoke(cli, [*args, "--platform", "tiktok"])
    assert bad.exit_code == 2
    assert "choose from auto, a, b" in bad.output


def test_cli_compare_heatmap_and_regions_take_the_platform_too(
    platform_checkpoint: Path, tmp_path: Path
) -> None:
    a, b = tmp_path / "a.jpg", tmp_path / "b.jpg"
    a.write_bytes(jpeg(seed=1))
    b.write_bytes(jpeg(120, 80, seed=2))
    model = ["--checkpoint", str(platform_checkpoint)]
    result = CliRunner().invoke(
        cli, ["compare", str(a), str(b), "--json", "--platform", "b", *model]
    )
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    sa, sb = (expected(platform_checkpoint, p.read_bytes(), "b")[0] for p in (a, b))
    assert math.isclose(answer["a"]["score"], sa, rel_tol=1e-4, abs_tol=1e-5)
    assert math.isclose(answer["probability_a_more_viral"], 1 / (1 + math.exp(sb - sa)))
    drawn = CliRunner().invoke(
        cli, ["heatmap", str(a), "-o", str(tmp_path / "m.png"), "--platform", "a", *model]
    )
    assert drawn.exit_code == 0, drawn.output
    assert f"score {expected(platform_checkpoint, a.read_bytes(), 'a')[0]:.4f}" in drawn.stderr
    for command in (["regions", str(a)], ["compare", str(a), str(b)]):
        bad = CliRunner().invoke(cli, [*command, "--platform", "tiktok", *model])
        assert bad.exit_code == 2
        assert "choose from auto, a, b" in bad.output
