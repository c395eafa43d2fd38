"""The service refuses to start on a checkpoint that fails validation, and says why."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from asgi_lifespan import LifespanManager
from safetensors.torch import load_file, save_file

from app.main import create_app
from app.settings import Settings
from model.checkpoint import CheckpointError

from .server import ROOT, free_port


def start(checkpoint: Path) -> subprocess.CompletedProcess[str]:
    """`python -m app` as the README runs it; it must exit by itself."""
    env = {
        **os.environ,
        "VIRALIENCY_CHECKPOINT": str(checkpoint),
        "VIRALIENCY_DEVICE": "cpu",
        "VIRALIENCY_HOST": "127.0.0.1",
        "VIRALIENCY_PORT": str(free_port()),
    }
    return subprocess.run(
        [sys.executable, "-m", "app"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def copy_of(checkpoint_dir: Path, folder: Path) -> Path:
    shutil.copytree(checkpoint_dir, folder)
    return folder


def test_the_service_refuses_a_nan_head_naming_the_tensor(
    checkpoint_dir: Path, tmp_path: Path
) -> None:
    folder = copy_of(checkpoint_dir, tmp_path / "nan-head")
    tensors = load_file(str(folder / "model.safetensors"))
    tensors["head.weight"][0, 0] = float("nan")  # before: every score null, answered 200
    save_file(tensors, str(folder / "model.safetensors"))
    result = start(folder)
    assert result.returncode != 0
    assert "weights: head.weight has 1 NaN or infinite value(s)" in result.stdout + result.stderr


async def test_the_app_refuses_decreasing_quantiles_naming_the_field(
    checkpoint_dir: Path, tmp_path: Path, settings_for: Callable[..., Settings]
) -> None:
    folder = copy_of(checkpoint_dir, tmp_path / "quantiles")
    config = json.loads((folder / "config.json").read_text())
    quantiles = config["calibration"]["quantiles"]
    quantiles[3] = quantiles[2] - 1.0
    (folder / "config.json").write_text(json.dumps(config))
    app = create_app(settings_for(checkpoint=folder))
    with pytest.raises(CheckpointError, match=r"calibration\.quantiles is not increasing"):
        async with LifespanManager(app, startup_timeout=60):
            pass
