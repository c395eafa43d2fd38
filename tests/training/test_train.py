"""Training: the fit loop learns, the frozen-prefix path is exact, DDP runs on two CPUs."""

from __future__ import annotations

import csv
import logging
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import training.train as train_module
from model.checkpoint import CheckpointInfo, load_checkpoint, read_info, save_checkpoint
from model.images import normalise
from model.network import NetworkConfig, ViralityNet
from tests.training.tiny_runs import bright_squares, tiny_run, write_dataset
from training.accuracy import pair_accuracy
from training.cache import FromBlock, cached_inputs, prefix_features, render_views, run_blocks
from training.config import ConfigError, TrainConfig
from training.data import DataError, LabelledPair, ScoredImage, Split
from training.distributed import distributed_backend
from training.evaluate import predict
from training.fit import fit, use_amp
from training.resume import check_resume_network
from training.train import main, parse_args, read_images, split_pairs, train

ROOT = Path(__file__).resolve().parents[2]


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


def test_train_from_labelled_pairs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_dataset(tmp_path / "data").parent
    monkeypatch.chdir(tmp_path)  # the view cache goes to ./cache
    cfg = tiny_run(
        folder,
        tmp_path / "run",
        data=str(folder / "pairs.csv"),
        data_format="pairs",
        pairs_per_epoch=2048,
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
    # Epochs go on from the checkpoint's last one, so the resumed run draws new pairs.
    assert [r["epoch"] for r in again.metrics["history"]] == [2.0]


def test_resume_keeps_the_recorded_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_dataset(tmp_path / "data").parent
    monkeypatch.chdir(tmp_path)
    first = train(tiny_run(folder, tmp_path / "run", epochs=1))
    assert first is not None
    recorded = load_checkpoint(first)[1].training["data"]["split"]
    # A different seed and fraction would draw another split and leak training images.
    resumed = train(
        tiny_run(
            folder, tmp_path / "resumed", epochs=1, resume=str(first), seed=7, val_fraction=0.5
        )
    )
    assert resumed is not None
    _, info = load_checkpoint(resumed)
    assert info.training["data"]["split"]["val"] == recorded["val"]
    assert info.training["data"]["split"]["train"] == recorded["train"]
    assert info.training["config"]["val_fraction"] == recorded["val_fraction"]


def _saved_gmp(folder: Path) -> Path:
    torch.manual_seed(0)
    net = ViralityNet(NetworkConfig(backbone="tiny", pooling="gmp", eta_init=0.0), False)
    save_checkpoint(net, CheckpointInfo(net.config, net.preprocessing), folder)
    return folder


def test_resume_adopts_the_checkpoints_network_and_refuses_conflicts(tmp_path: Path) -> None:
    ckpt = _saved_gmp(tmp_path / "gmp")
    cfg = parse_args(["--resume", str(ckpt), "--epochs", "3"])
    assert (cfg.backbone, cfg.pooling, cfg.eta_init, cfg.objectness) == ("tiny", "gmp", 0.0, 0)
    assert cfg.epochs == 3
    info = read_info(ckpt)
    check_resume_network(cfg, info)  # adopted settings agree with the checkpoint
    given = parse_args(["--resume", str(ckpt), "--pooling", "lena"])
    assert given.pooling == "lena"  # what the user typed is kept, then refused:
    with pytest.raises(
        ConfigError, match=r"conflicts with --pooling lena \(the checkpoint has 'gmp'\)"
    ):
        check_resume_network(given, info)
    with pytest.raises(SystemExit, match="leave these flags out"):
        main(["--resume", str(ckpt), "--backbone", "mobilenet_v2", "--data", "unused.csv"])


def test_a_killed_run_leaves_a_resumable_best_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_dataset(tmp_path / "data").parent
    monkeypatch.chdir(tmp_path)
    real_save = train_module.save_run

    def save_then_die(*args: object, **kwargs: object) -> Path:
        real_save(*args, **kwargs)  # type: ignore[arg-type]
        raise KeyboardInterrupt  # Ctrl-C right after the first best state is written

    monkeypatch.setattr(train_module, "save_run", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_run(folder, tmp_path / "run", epochs=5))
    _, info = load_checkpoint(tmp_path / "run")
    assert info.metrics["best_epoch"] == 0
    assert [r["epoch"] for r in info.metrics["history"]] == [0.0]
    assert info.calibration is not None
    assert not list((tmp_path / "run").glob("*.partial"))
    monkeypatch.setattr(train_module, "save_run", real_save)
    resumed = train(tiny_run(folder, tmp_path / "more", epochs=1, resume=str(tmp_path / "run")))
    assert resumed is not None
    assert load_checkpoint(resumed)[1].metrics["history"][0]["epoch"] == 1.0


def test_fit_reports_every_new_best() -> None:
    train_images, train_scores = bright_squares(96, seed=0)
    val_images, val_scores = bright_squares(48, seed=1)
    model = FromBlock(tiny_net(), 0)
    cfg = TrainConfig(epochs=4, pairs_per_epoch=128, batch_pairs=32, lr=3e-3, seed=0)
    calls: list[tuple[int, float, np.ndarray]] = []
    result = fit(
        model,
        train_images[None],
        train_scores,
        val_images,
        val_scores,
        cfg,
        on_best=lambda best, predicted: calls.append(
            (best.best_epoch, best.best_val_acc, predicted)
        ),
    )
    running_best = np.maximum.accumulate([r["val_acc"] for r in result.history])
    improved = [0] + [e for e in range(1, 4) if running_best[e] > running_best[e - 1]]
    assert [epoch for epoch, _, _ in calls] == improved
    assert calls[-1][1] == result.best_val_acc
    # The scores handed over are the validation scores of that best state.
    model.load_state_dict(result.model_state)
    np.testing.assert_allclose(calls[-1][2], predict(model, val_images, torch.device("cpu")))


def test_split_pairs_excludes_and_counts_pairs_across_the_split(
    caplog: pytest.LogCaptureFixture,
) -> None:
    images = [ScoredImage(Path(f"/d/{i}.png"), 0.0) for i in range(6)]
    split = Split(train=tuple(images[:4]), val=tuple(images[4:]), seed=0, val_fraction=0.3)
    p = [image.path for image in images]
    pairs = [
        LabelledPair(p[0], p[1], 1),
        LabelledPair(p[2], p[3], 0),
        LabelledPair(p[4], p[5], 1),
        LabelledPair(p[0], p[5], 1),  # crosses
        LabelledPair(p[4], p[3], 0),  # crosses
    ]
    with caplog.at_level(logging.INFO, logger="viraliency.train"):
        train_pairs, val_pairs = split_pairs(pairs, split, seed=0)
    np.testing.assert_array_equal(train_pairs.pairs, [[0, 1], [3, 2]])
    np.testing.assert_array_equal(val_pairs, [[0, 1]])
    assert "2 training and 1 validation pairs; 2 pairs cross the image split" in caplog.text
    with pytest.raises(DataError, match="too few labelled pairs"):
        split_pairs(pairs[:2], split, seed=0)


def test_backend_follows_the_training_device() -> None:
    assert distributed_backend(torch.device("cpu")) == "gloo"
    assert distributed_backend(torch.device("cuda", 0)) == "nccl"


def test_amp_only_where_the_gpu_has_bf16(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = TrainConfig()
    cuda = torch.device("cuda")
    assert not use_amp(cfg, torch.device("cpu"))
    assert not use_amp(replace(cfg, amp=False), cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert use_amp(cfg, cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    with caplog.at_level(logging.WARNING, logger="viraliency.train"):
        assert not use_amp(cfg, cuda)
    assert "no bf16 support" in caplog.text


def test_on_bad_image_flag(tmp_path: Path) -> None:
    folder = write_dataset(tmp_path / "data", n=8).parent
    (folder / "3.png").write_bytes(b"not a png")
    cfg = parse_args(["--data", str(folder / "scores.csv"), "--data-format", "scores"])
    assert cfg.on_bad_image == "error"
    with pytest.raises(DataError, match=r"row 5: .*3\.png \(unreadable"):
        read_images(cfg)
    skip = parse_args(
        ["--data", str(folder / "scores.csv"), "--data-format", "scores", "--on-bad-image", "skip"]
    )
    images, _ = read_images(skip)
    assert sorted(i.path.name for i in images) == [f"{i}.png" for i in (0, 1, 2, 4, 5, 6, 7)]
    with pytest.raises(ConfigError, match="--on-bad-image: Input should be 'error' or 'skip'"):
        parse_args(["--on-bad-image", "ignore"])


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
        "training.train",
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
    digests = {
        int(m[1]): (m[2], m[3])
        for m in re.finditer(
            r"rank (\d) of 2: final parameters sha256 (\w+), pairs sha256 (\w+)", done.stderr
        )
    }
    assert sorted(digests) == [0, 1], done.stderr[-3000:]
    (params_0, pairs_0), (params_1, pairs_1) = digests[0], digests[1]
    # Each rank trained on its own share of the pairs, yet DDP kept the replicas identical.
    assert pairs_0 != pairs_1
    assert params_0 == params_1
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
