"""`viraliency` against a tiny real checkpoint and real files, compared with the service."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

from app.settings import Settings
from cli.main import cli
from tests.app.helpers import running
from tests.app.imaging import png_declaring_size


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


async def served_scores(checkpoint: Path, files: list[Path]) -> dict[str, dict[str, float]]:
    """POST /score through the real app: what the CLI must agree with, by image_id."""
    settings = Settings(checkpoint=checkpoint, device="cpu", decode_threads=2)
    async with running(settings) as (_, client):
        upload = [("images", (p.name, p.read_bytes())) for p in files]
        response = await client.post("/score", files=upload)
    assert response.status_code == 200, response.text
    return {e["image_id"]: e for e in response.json()["results"]}


def read_rows(out: Path) -> list[dict[str, str]]:
    if out.suffix == ".csv":
        return list(csv.DictReader(out.open()))
    return [json.loads(line) for line in out.read_text().splitlines()]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
async def test_score_a_folder_matches_the_service_and_skips_bad_files(
    checkpoint: Path, photos: Path, tmp_path: Path, suffix: str
) -> None:
    out = tmp_path / f"scores{suffix}"
    bad = photos / "notes.txt"
    result = invoke(
        "score", photos, bad, "--out", out, "--checkpoint", checkpoint, "--batch-size", 3
    )
    assert result.exit_code == 1, result.output  # one file skipped
    assert f"skipped {bad}: unsupported_format" in result.stderr
    rows = read_rows(out)
    images = sorted(p for p in photos.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg"})
    assert [r["path"] for r in rows] == [str(p) for p in images]
    expected = await served_scores(checkpoint, images)
    for row, path in zip(rows, images, strict=True):
        assert row["image_id"] == hashlib.sha256(path.read_bytes()).hexdigest()
        served = expected[row["image_id"]]
        assert math.isclose(float(row["score"]), served["score"], rel_tol=1e-5, abs_tol=1e-6)
        assert math.isclose(float(row["percentile"]), served["percentile"], abs_tol=1e-2)


def test_score_resumes_and_skips_paths_already_in_out(
    checkpoint: Path, photos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "scores.jsonl"
    first = invoke("score", photos / "a.jpg", "--out", out, "--checkpoint", checkpoint)
    assert first.exit_code == 0, first.output
    with out.open("a") as f:
        f.write('{"path": "cut sho')  # an interrupted write
    again = invoke("score", f"{photos}/*.jpg", "--out", out, "--checkpoint", checkpoint)
    assert again.exit_code == 0, again.output
    assert "1 of 2 already in" in again.stderr
    paths = [row["path"] for row in read_rows_tolerant(out)]
    assert paths == [str(photos / "a.jpg"), str(photos / "b.jpg")]


def read_rows_tolerant(out: Path) -> list[dict[str, str]]:
    rows = []
    for line in out.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def test_score_prints_a_table_and_exits_0(checkpoint: Path, photos: Path) -> None:
    result = invoke("score", photos / "a.jpg", photos / "b.jpg", "--checkpoint", checkpoint)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["path", "image_id", "score", "percentile"]
    assert [line.split()[0] for line in lines[1:]] == [str(photos / "a.jpg"), str(photos / "b.jpg")]
    digest = hashlib.sha256((photos / "a.jpg").read_bytes()).hexdigest()
    assert lines[1].split()[1] == digest[:12]


def test_score_reports_missing_and_oversized_files(
    checkpoint: Path, photos: Path, tmp_path: Path
) -> None:
    huge = tmp_path / "bomb.png"
    huge.write_bytes(png_declaring_size(50_000, 50_000))
    result = invoke("score", tmp_path / "missing.jpg", huge, "--checkpoint", checkpoint)
    assert result.exit_code == 1
    assert "missing.jpg: cannot read it" in result.stderr
    assert "too_many_pixels" in result.stderr
    assert "skipped 2 bad file(s)" in result.stderr


async def test_compare_agrees_with_the_service(checkpoint: Path, photos: Path) -> None:
    a, b = photos / "a.jpg", photos / "b.jpg"
    result = invoke("compare", a, b, "--json", "--checkpoint", checkpoint)
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    settings = Settings(checkpoint=checkpoint, device="cpu", decode_threads=2)
    async with running(settings) as (_, client):
        files = {"image_a": ("a.jpg", a.read_bytes()), "image_b": ("b.jpg", b.read_bytes())}
        served = (await client.post("/compare", files=files)).json()
    assert answer["winner"] == served["winner"]
    assert math.isclose(
        answer["probability_a_more_viral"], served["probability_a_more_viral"], rel_tol=1e-5
    )
    text = invoke("compare", a, b, "--checkpoint", checkpoint).stdout
    assert f"winner: {served['winner'].upper()}" in text


async def test_heatmap_writes_what_get_heatmap_serves(
    checkpoint: Path, photos: Path, tmp_path: Path
) -> None:
    image = photos / "b.jpg"
    out = tmp_path / "map.png"
    args = ("--alpha", "0.7", "--colormap", "Viridis", "--max-side", "50")
    result = invoke("heatmap", image, "-o", out, *args, "--checkpoint", checkpoint)
    assert result.exit_code == 0, result.output
    settings = Settings(checkpoint=checkpoint, device="cpu", decode_threads=2)
    async with running(settings) as (_, client):
        scored = await client.post("/score", files={"images": ("b.jpg", image.read_bytes())})
        image_id = scored.json()["results"][0]["image_id"]
        query = {"image_id": image_id, "alpha": 0.7, "colormap": "viridis", "max_side": 50}
        served = await client.get("/heatmap", params=query)
    assert served.status_code == 200, served.text
    mine = np.asarray(Image.open(out))
    theirs = np.asarray(Image.open(io.BytesIO(served.content)))
    assert mine.shape == theirs.shape == (round(50 * 72 / 104), 50, 3)
    assert np.abs(mine.astype(int) - theirs.astype(int)).max() <= 1


def test_heatmap_refuses_an_unknown_suffix(checkpoint: Path, photos: Path, tmp_path: Path) -> None:
    result = invoke(
        "heatmap", photos / "a.jpg", "-o", tmp_path / "x.gif", "--checkpoint", checkpoint
    )
    assert result.exit_code == 2
    assert ".png, .jpg or .jpeg" in result.output


async def test_regions_agree_with_the_service(checkpoint: Path, photos: Path) -> None:
    image = photos / "a.jpg"
    result = invoke("regions", image, "--json", "--threshold", "0.3", "--checkpoint", checkpoint)
    assert result.exit_code == 0, result.output
    settings = Settings(checkpoint=checkpoint, device="cpu", decode_threads=2)
    async with running(settings) as (_, client):
        files = {"image": ("a.jpg", image.read_bytes())}
        served = (await client.post("/regions", files=files, params={"threshold": 0.3})).json()
    mine = json.loads(result.stdout)
    assert mine["image_id"] == served["image_id"]
    assert [(r["x"], r["y"], r["width"], r["height"]) for r in mine["regions"]] == [
        (r["x"], r["y"], r["width"], r["height"]) for r in served["regions"]
    ]


def test_a_missing_checkpoint_is_a_one_line_error(tmp_path: Path, photos: Path) -> None:
    result = invoke("score", photos / "a.jpg", "--checkpoint", tmp_path / "nowhere")
    assert result.exit_code == 1
    assert "cannot load" in result.output
    assert "config.json not found" in result.output


@pytest.mark.parametrize(
    "command", [[], ["score"], ["compare"], ["heatmap"], ["regions"], ["serve"]]
)
def test_help_everywhere_and_serve_help_starts_nothing(command: list[str]) -> None:
    result = invoke(*command, "--help")
    assert result.exit_code == 0
    assert "Usage: " in result.output
    if command:
        assert "--checkpoint" in result.output


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.output.startswith("viraliency 0.1.0")


def test_serve_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """serve builds Settings from its flags over VIRALIENCY_*; run() is where it would start."""
    seen: list[Settings] = []
    monkeypatch.setattr("app.main.run", seen.append)
    monkeypatch.setenv("VIRALIENCY_PORT", "9999")
    monkeypatch.setenv("VIRALIENCY_MAX_BATCH_SIZE", "5")
    result = invoke("serve", "--port", "8123", "--device", "cpu")
    assert result.exit_code == 0, result.output
    (settings,) = seen
    assert (settings.port, settings.device, settings.max_batch_size) == (8123, "cpu", 5)
    bad = invoke("serve", "--device", "tpu")
    assert bad.exit_code == 2
    assert "device" in bad.output


def test_evaluate_passes_its_arguments_through(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["evaluate", "--checkpoint", str(tmp_path / "nowhere")])
    assert result.exit_code != 0
    assert "nowhere" in str(result.exception) + result.output
