"""`viraliency-train --arch viralnet-m` end to end on a small real dataset (tiny trunk): it
trains the localisers and the ranker only, and writes a checkpoint that rebuilds the same
network, on the CPU or a CUDA GPU; `python -m training.viralnet` is the same command."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from model.checkpoint import load_network
from model.viralnet import ViralNet
from training.categories import fit_probe
from training.data import read_dankmemes_categories
from training.train import main as train_main
from training.viralnet import main as viralnet_main
from training.viralnet_fit import FitConfig, fit, level_cache, load_pixels, predict

from .tiny_runs import write_dankmemes, write_dataset


def test_cli_trains_and_writes_a_checkpoint_that_scores_the_same(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", n=24)
    out = tmp_path / "run"
    train_main(
        [
            "--arch", "viralnet-m", "--backbone", "tiny", "--data", str(data),
            "--data-format", "scores", "--out", str(out), "--input-size", "64",
            "--crop-size", "32", "--epochs", "2", "--pairs-per-epoch", "32",
            "--batch-pairs", "8", "--val-fraction", "0.25",
        ]
    )  # fmt: skip
    config = json.loads((out / "config.json").read_text())
    assert config["arch"] == "viralnet-m"
    assert config["training"]["config"]["weight_decay"] == 1e-4  # ViralNet's default, not LENA's
    assert len(config["training"]["data"]["split"]["val"]) == 6
    assert len(config["metrics"]["history"]) == 2
    net, _ = load_network(out)
    assert isinstance(net, ViralNet)
    val = [data.parent / name for name in config["training"]["data"]["split"]["val"]]
    pixels = load_pixels(val, 64)
    recomputed = predict(net, pixels, level_cache(net, pixels))
    quantiles = np.percentile(recomputed, np.arange(101))
    np.testing.assert_allclose(config["calibration"]["quantiles"], quantiles, atol=1e-5)


def test_the_old_entry_point_is_the_same_command_with_viralnet_m(tmp_path: Path) -> None:
    """Refused at parse time, before any data is read: so it parsed as a ViralNet-M run."""
    missing = str(tmp_path / "missing.csv")
    refused = "--pooling applies only to --arch lena, not to viralnet-m"
    with pytest.raises(SystemExit, match=refused):
        viralnet_main(["--data", missing, "--pooling", "gap"])
    with pytest.raises(SystemExit, match="not to viralnet-mc"):
        viralnet_main(["--data", missing, "--arch", "viralnet-mc", "--pooling", "gap"])


def tiny_fit(tmp_path: Path, **changes: object) -> FitConfig:
    """Two epochs of 2 steps of a tiny ViralNet on 24 images (18 train, 6 validation)."""
    data = write_dataset(tmp_path / "data", n=24)
    cfg = FitConfig(
        arch="viralnet", backbone="tiny", data=str(data), data_format="scores",
        out=str(tmp_path / "run"), input_size=64, crop_size=32, epochs=2, pairs_per_epoch=16,
        batch_pairs=8, loc_lr=1e-2,
    )  # fmt: skip
    return replace(cfg, **changes)  # type: ignore[arg-type]


def initial_network(trained: ViralNet, seed: int) -> ViralNet:
    torch.manual_seed(seed)
    return ViralNet(trained.config, pretrained=True)  # as fit builds it, from the same seed


def trained_and_initial(tmp_path: Path, warmup_steps: int) -> tuple[ViralNet, ViralNet]:
    """One epoch of 2 steps on a tiny ViralNet, and the network fit started from."""
    cfg = tiny_fit(tmp_path, warmup_steps=warmup_steps)
    fit(cfg)
    trained, _ = load_network(Path(cfg.out))
    assert isinstance(trained, ViralNet)
    return trained, initial_network(trained, cfg.seed)


def test_a_training_epoch_moves_only_localisers_and_ranker(tmp_path: Path) -> None:
    trained, initial = trained_and_initial(tmp_path, warmup_steps=0)
    for name, tensor in trained.trunk.state_dict().items():
        torch.testing.assert_close(tensor, initial.trunk.state_dict()[name])
    assert not torch.equal(trained.localisers[0].out.weight, initial.localisers[0].out.weight)


@pytest.mark.parametrize("warmup_steps", [4, 100])
def test_during_the_warm_up_only_the_ranker_moves(tmp_path: Path, warmup_steps: int) -> None:
    """2 epochs of 2 steps: a warm-up of 4 (or more) steps covers them all, across epochs."""
    trained, initial = trained_and_initial(tmp_path, warmup_steps)
    for name, tensor in trained.localisers.state_dict().items():
        torch.testing.assert_close(tensor, initial.localisers.state_dict()[name], rtol=0, atol=0)
    ranker = dict(initial.ranker.named_parameters())
    assert any(not torch.equal(p, ranker[n]) for n, p in trained.ranker.named_parameters())


def test_the_localisers_move_once_the_warm_up_is_over(tmp_path: Path) -> None:
    """A warm-up of 3 of the 4 steps: the fourth, in the second epoch, moves them."""
    trained, initial = trained_and_initial(tmp_path, warmup_steps=3)
    assert not torch.equal(trained.localisers[0].out.weight, initial.localisers[0].out.weight)


def test_viralnet_mc_fits_its_category_probe_on_the_training_images_first(
    tmp_path: Path,
) -> None:
    data = write_dankmemes(tmp_path / "dank")
    out = tmp_path / "run"
    train_main(
        [
            "--arch", "viralnet-mc", "--categories", "probe", "--backbone", "tiny",
            "--data", str(data), "--data-format", "dankmemes", "--out", str(out),
            "--input-size", "64", "--crop-size", "32", "--epochs", "1",
            "--pairs-per-epoch", "16", "--batch-pairs", "8", "--val-fraction", "0.25",
        ]
    )  # fmt: skip
    config = json.loads((out / "config.json").read_text())
    record = config["training"]["category_probe"]
    train_names = config["training"]["data"]["split"]["train"]
    assert record["images"] == len(train_names) == 18  # not the 6 validation images
    assert record["categories"] == ["meme", "manipulation", "people"]
    net, _ = load_network(out)
    assert isinstance(net, ViralNet)
    assert net.config.categories == "probe"
    # The frozen probe is what a probe fitted on those images' own labels and features gives.
    train = [data / "images" / name for name in train_names]
    pixels = load_pixels(train, 64)
    phi = level_cache(net, pixels)[0].mean(dim=(2, 3)).double().numpy()
    expected = fit_probe(phi, read_dankmemes_categories(data, train))
    torch.testing.assert_close(
        net.categories.class_weight, expected.weight.float(), rtol=1e-3, atol=1e-4
    )
    # It learnt the planted category: the training images' meme probabilities follow it.
    g = net.categories(torch.from_numpy(phi).float())[:, 0].numpy()
    meme = read_dankmemes_categories(data, train)[:, 0]
    assert g[meme == 1].mean() > 0.7 > 0.3 > g[meme == 0].mean()


def test_the_category_probe_needs_a_c_arch_and_dankmemes_labels(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing")
    with pytest.raises(SystemExit, match="--categories applies to viralnet-c / -mc"):
        train_main(["--arch", "viralnet-m", "--categories", "probe", "--data", missing])
    with pytest.raises(SystemExit, match="--category-data DANKMEMES_FOLDER"):
        train_main(
            ["--arch", "viralnet-mc", "--categories", "probe", "--data", missing,
             "--data-format", "reddit"]
        )  # fmt: skip


def test_other_data_gets_the_probe_fitted_on_every_image_of_category_data(
    tmp_path: Path,
) -> None:
    dank = write_dankmemes(tmp_path / "dank")
    data = write_dataset(tmp_path / "data", n=24)
    out = tmp_path / "run"
    train_main(
        [
            "--arch", "viralnet-mc", "--categories", "probe", "--category-data", str(dank),
            "--backbone", "tiny", "--data", str(data), "--data-format", "scores",
            "--out", str(out), "--input-size", "64", "--crop-size", "32", "--epochs", "1",
            "--pairs-per-epoch", "16", "--batch-pairs", "8", "--val-fraction", "0.25",
        ]
    )  # fmt: skip
    record = json.loads((out / "config.json").read_text())["training"]["category_probe"]
    assert (record["source"], record["images"]) == ("dank", 24)
    net, _ = load_network(out)
    assert isinstance(net, ViralNet)
    paths = sorted((dank / "images").iterdir())
    phi = level_cache(net, load_pixels(paths, 64))[0].mean(dim=(2, 3)).double().numpy()
    expected = fit_probe(phi, read_dankmemes_categories(dank, paths))
    torch.testing.assert_close(
        net.categories.class_weight, expected.weight.float(), rtol=1e-3, atol=1e-4
    )


def without_timings(metrics: dict[str, Any]) -> dict[str, Any]:
    history = [{k: v for k, v in row.items() if k != "seconds"} for row in metrics["history"]]
    return {**metrics, "history": history}


@pytest.mark.skipif(torch.cuda.is_available(), reason="here the default device is the GPU")
def test_a_cpu_fit_is_the_default_fit_bit_for_bit(tmp_path: Path) -> None:
    default = tiny_fit(tmp_path, warmup_steps=1, out=str(tmp_path / "default"))
    on_cpu = replace(default, device="cpu", out=str(tmp_path / "cpu"))
    assert without_timings(fit(default)) == without_timings(fit(on_cpu))
    first, _ = load_network(Path(default.out))
    second, _ = load_network(Path(on_cpu.out))
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[name]), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_cuda_fit_trains_and_its_checkpoint_scores_the_same_on_the_cpu(tmp_path: Path) -> None:
    """Trained under autocast on the GPU; the checkpoint's calibration (the GPU's float32
    scores of the validation images) matches the CPU's scores of the saved network, within
    TF32's rounding of the GPU's convolutions."""
    cfg = tiny_fit(tmp_path, device="cuda", warmup_steps=0)
    metrics = fit(cfg)
    history = metrics["history"]
    assert len(history) == 2
    assert all(math.isfinite(row["train_loss"]) for row in history)
    trained, _ = load_network(Path(cfg.out))  # on the CPU
    assert isinstance(trained, ViralNet)
    initial = initial_network(trained, cfg.seed)
    assert not torch.equal(trained.localisers[0].out.weight, initial.localisers[0].out.weight)
    config = json.loads((Path(cfg.out) / "config.json").read_text())
    val = [Path(cfg.data).parent / name for name in config["training"]["data"]["split"]["val"]]
    pixels = load_pixels(val, 64)
    on_cpu = predict(trained, pixels, level_cache(trained, pixels))
    quantiles = np.percentile(on_cpu, np.arange(101))
    np.testing.assert_allclose(config["calibration"]["quantiles"], quantiles, rtol=1e-2, atol=2e-3)
