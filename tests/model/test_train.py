"""Training: the fit loop learns, the frozen-prefix path is exact, DDP runs on two CPUs."""

from __future__ import annotations

import csv
import logging
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from model.cache import FromBlock, cached_inputs, prefix_features, render_views, run_blocks
from model.checkpoint import load_checkpoint
from model.images import normalise
from model.network import NetworkConfig, ViralityNet
from model.train import TrainConfig, fit, pair_accuracy, predict, train

ROOT = Path(__file__).resolve().parents[2]


def bright_squares(n: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """uint8 (N, 64, 64, 3) noise images with a square whose brightness is the score."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 80, size=(n, 64, 64, 3), dtype=np.uint8)
    scores = rng.integers(1, 256, size=n).astype(float)
    for img, s in zip(images, scores, strict=True):
        y, x = rng.integers(0, 48, size=2)
        img[y : y + 16, x : x + 16] = int(s)
    return torch.from_numpy(images), scores


def tiny_net() -> ViralityNet:
    torch.manual_seed(0)
    return ViralityNet(NetworkConfig(backbone="tiny", pooling="lena"), pretrained=False)


def test_fit_learns_and_moves_eta() -> None:
    train_images, train_scores = bright_squares(128, seed=0)
    val_images, val_scores = bright_squares(64, seed=1)
    model = FromBlock(tiny_net(), 0)
    eta_before = model.net.pool.eta.detach().clone()
    cfg = TrainConfig(epochs=2, pairs_per_epoch=384, batch_pairs=32, lr=3e-3, seed=0)
    before = pair_accuracy(predict(model, val_images, torch.device("cpu")), _pairs(val_scores))
    result = fit(model, train_images[None], train_scores, val_images, val_scores, cfg)
    assert result.best_val_acc > 0.85 > before
    assert len(result.history) == 2
    assert not torch.equal(model.net.pool.eta.detach(), eta_before)
    assert ((model.net.pool.eta >= 0) & (model.net.pool.eta <= 1)).all()


def _pairs(scores: np.ndarray) -> np.ndarray:
    hi, lo = np.nonzero(scores[:, None] + 1 >= 2 * (scores[None, :] + 1))
    return np.stack([hi, lo], axis=1)


def test_frozen_prefix_path_equals_the_whole_network() -> None:
    net = tiny_net().eval()
    views, _ = bright_squares(8, seed=2)
    model = FromBlock(net, 2)
    cached = prefix_features(model, views[None], torch.device("cpu"))[0].float()
    with torch.no_grad():
        whole = net(normalise(views, net.preprocessing))
        torch.testing.assert_close(model(cached), whole, rtol=2e-3, atol=2e-3)  # fp16 cache
    assert not any(p.requires_grad for p in model.prefix.parameters())


def write_dataset(folder: Path, n: int = 48) -> Path:
    """Images on disk plus scores.csv (path,score) and pairs.csv (path_a,path_b,label)."""
    images, scores = bright_squares(n, seed=3)
    folder.mkdir()
    for i, img in enumerate(images.numpy()):
        cv2.imwrite(str(folder / f"{i}.png"), img)
    with (folder / "scores.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "score"])
        writer.writerows([f"{i}.png", score] for i, score in enumerate(scores))
    rng = np.random.default_rng(0)
    with (folder / "pairs.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path_a", "path_b", "label"])
        for a, b in rng.integers(0, n, size=(400, 2)):
            if scores[a] != scores[b]:
                writer.writerow([f"{a}.png", f"{b}.png", int(scores[a] > scores[b])])
    return folder / "scores.csv"


def test_train_from_labelled_pairs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_dataset(tmp_path / "data").parent
    monkeypatch.chdir(tmp_path)  # the view cache goes to ./cache
    cfg = TrainConfig(
        data=str(folder / "pairs.csv"),
        data_format="pairs",
        backbone="tiny",
        freeze_blocks=0,
        views=1,
        epochs=2,
        batch_pairs=16,
        lr=3e-3,
        val_fraction=0.25,
        out=str(tmp_path / "run"),
    )
    out = train(cfg)
    assert out is not None
    _, info = load_checkpoint(out)
    val = set(info.training["data"]["split"]["val"])
    pairs = list(csv.DictReader((folder / "pairs.csv").open()))
    expected = sum(1 for p in pairs if p["path_a"] in val and p["path_b"] in val)
    assert info.metrics["val_pairs"] == expected > 0
    assert info.metrics["val_acc"] > 0.7
    # Resuming starts from the saved weights: before any step, it already scores as well.
    resumed = train(
        replace(
            cfg,
            resume=str(out),
            epochs=1,
            lr=0.0,
            head_lr=0.0,
            eta_lr=0.0,
            out=str(tmp_path / "resumed"),
        )
    )
    assert resumed is not None
    _, again = load_checkpoint(resumed)
    assert again.metrics["val_acc"] == pytest.approx(info.metrics["val_acc"])


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tmp_path: Path) -> None:
    csv_path = write_dataset(tmp_path / "data")
    args = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29517",
        "-m",
        "model.train",
        "--data",
        str(csv_path),
        "--data-format",
        "scores",
        "--backbone",
        "tiny",
        "--freeze-blocks",
        "0",
        "--views",
        "1",
        "--epochs",
        "2",
        "--pairs-per-epoch",
        "64",
        "--batch-pairs",
        "8",
        "--val-fraction",
        "0.25",
        "--out",
        str(tmp_path / "run"),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank 0 of 2" in done.stderr
    assert "rank 1 of 2" in done.stderr
    _, info = load_checkpoint(tmp_path / "run")
    assert info.calibration is not None
    assert len(info.metrics["history"]) == 2
    assert len(info.training["data"]["split"]["val"]) == 12


def test_deeper_cache_builds_on_a_shallower_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = write_dataset(tmp_path / "data", n=6).parent
    paths = sorted(folder.glob("*.png"))
    net = tiny_net().eval()
    cpu = torch.device("cpu")
    shallow = cached_inputs(FromBlock(net, 2), paths, 2, 0, cpu, tmp_path / "cache")
    with caplog.at_level(logging.INFO):
        deep = cached_inputs(FromBlock(net, 4), paths, 2, 0, cpu, tmp_path / "cache")
    assert "building on cached inputs" in caplog.text
    direct = run_blocks(net, shallow, 2, 4, cpu)
    torch.testing.assert_close(deep, direct)
    views = render_views(paths, 64, 2, 0)
    from_views = prefix_features(FromBlock(net, 4), views, cpu)
    torch.testing.assert_close(deep.float(), from_views.float(), rtol=1e-2, atol=1e-2)
    again = cached_inputs(FromBlock(net, 4), paths, 2, 0, cpu, tmp_path / "cache")
    assert torch.equal(again, deep)


@pytest.mark.slow
def test_train_with_objectness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Section 3.4 end to end: classes picked on the training images, fused, saved, reloaded."""
    csv_path = write_dataset(tmp_path / "data", n=16)
    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig(
        data=str(csv_path),
        data_format="scores",
        objectness=5,
        views=1,
        epochs=1,
        batch_pairs=4,
        pairs_per_epoch=16,
        val_fraction=0.25,
        out=str(tmp_path / "run"),
    )
    out = train(cfg)
    assert out is not None
    net, info = load_checkpoint(out)
    assert len(info.network.objectness_classes) == 5
    assert net.objectness is not None
    with torch.no_grad():
        assert net(torch.randn(1, 3, 224, 224)).shape == (1,)
