"""Pairwise accuracy and its image-resampling bootstrap; `viraliency-evaluate` end to end."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from model.checkpoint import load_checkpoint
from tests.training.tiny_runs import tiny_run, write_dataset
from training.accuracy import pair_accuracy
from training.evaluate import bootstrap_accuracy, validation_metrics
from training.evaluate import main as evaluate_main
from training.pairs import ratio_pairs
from training.train import main as train_main
from training.train import train


def expanded_accuracy(predicted: np.ndarray, truth: np.ndarray, counts: np.ndarray) -> float:
    """Brute force: list every drawn copy of every image, then score every qualifying pair."""
    copies = [i for i, c in enumerate(counts) for _ in range(int(c))]
    hits = total = 0
    for i, j in itertools.permutations(copies, 2):
        if truth[i] + 1 >= 2 * (truth[j] + 1):  # i at least 2x more viral than j
            total += 1
            hits += predicted[i] > predicted[j]
    return hits / total


def test_resampled_accuracy_matches_brute_force() -> None:
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 200, size=12).astype(float)
    predicted = truth + rng.normal(scale=60, size=12)
    pairs = ratio_pairs(truth, 2.0)
    counts = rng.multinomial(12, np.full(12, 1 / 12), size=5)
    got = pair_accuracy(predicted, pairs, counts)
    for row, value in zip(counts, got, strict=True):
        assert value == pytest.approx(expanded_accuracy(predicted, truth, row))


def test_bootstrap_interval() -> None:
    rng = np.random.default_rng(0)
    truth = rng.lognormal(3, 1.5, size=150)
    noisy = np.log1p(truth) + rng.normal(scale=1.5, size=150)
    pairs = ratio_pairs(truth, 2.0)
    acc, lo, hi = bootstrap_accuracy(noisy, pairs, 150, n_boot=500)
    assert acc == pytest.approx(np.mean(noisy[pairs[:, 0]] > noisy[pairs[:, 1]]))
    assert lo < acc < hi
    assert 0.02 < hi - lo < 0.3
    assert bootstrap_accuracy(truth, pairs, 150, n_boot=200)[1:] == (1.0, 1.0)


def test_validation_metrics_report_both_protocols() -> None:
    rng = np.random.default_rng(0)
    truth = rng.lognormal(3, 1.5, size=100)
    metrics = validation_metrics(-truth, truth)  # a perfectly wrong predictor
    assert metrics["val_acc"] == 0.0
    assert metrics["val_acc_extreme"] == 0.0
    assert metrics["extreme_k"] == 20
    assert metrics["val_pairs"] == len(ratio_pairs(truth, 2.0))


# --- viraliency-evaluate on a user's own data ------------------------------------------------


@pytest.mark.parametrize("data_format", ["scores", "pairs"])
def test_evaluate_reproduces_the_checkpoints_validation(
    data_format: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = write_dataset(tmp_path / "data").parent
    monkeypatch.chdir(tmp_path)
    data = folder / f"{data_format}.csv"
    cfg = tiny_run(
        folder,
        tmp_path / "run",
        data=str(data),
        data_format=data_format,
        epochs=1,
        pairs_per_epoch=64,
        val_fraction=0.3,
        seed=3,  # not evaluate's default: the split must come from the checkpoint
    )
    out = train(cfg)
    assert out is not None
    _, info = load_checkpoint(out)
    capsys.readouterr()
    evaluate_main([str(out), "--data", str(data), "--data-format", data_format])
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["val_images"] == len(info.training["data"]["split"]["val"])
    assert metrics["val_pairs"] == info.metrics["val_pairs"] > 0
    assert metrics["val_acc"] == pytest.approx(info.metrics["val_acc"])
    assert metrics["val_acc_ci95"] == pytest.approx(info.metrics["val_acc_ci95"])
    # Without --data/--data-format the checkpoint's own record is used.
    evaluate_main([str(out)])
    assert json.loads(capsys.readouterr().out)["val_acc"] == pytest.approx(metrics["val_acc"])


def test_evaluate_names_images_missing_from_the_recorded_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_dataset(tmp_path / "data").parent
    monkeypatch.chdir(tmp_path)
    out = train(tiny_run(folder, tmp_path / "run", epochs=1, pairs_per_epoch=32, val_fraction=0.15))
    assert out is not None
    rows = (folder / "scores.csv").read_text().splitlines()
    (folder / "fewer.csv").write_text("\n".join(rows[:-5]) + "\n")
    with pytest.raises(SystemExit, match="of the recorded split are not among the given images"):
        evaluate_main([str(out), "--data", str(folder / "fewer.csv")])


def test_evaluate_a_viralnet_checkpoint_gives_its_own_numbers_in_lenas_shape(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = write_dataset(tmp_path / "data", n=32).parent
    out = tmp_path / "viralnet"
    train_main(
        [
            "--arch", "viralnet-m", "--backbone", "tiny", "--data", str(folder / "scores.csv"),
            "--data-format", "scores", "--out", str(out), "--input-size", "64",
            "--crop-size", "32", "--epochs", "1", "--pairs-per-epoch", "32", "--batch-pairs", "8",
            "--val-fraction", "0.4", "--seed", "3",
        ]
    )  # fmt: skip
    recorded = json.loads((out / "config.json").read_text())["metrics"]
    capsys.readouterr()
    evaluate_main([str(out)])
    metrics = json.loads(capsys.readouterr().out)
    assert metrics.keys() == validation_metrics(np.arange(4.0), np.arange(4.0) * 3).keys()
    assert metrics["val_images"] == 13
    assert metrics["val_pairs"] == recorded["val_pairs"] > 0
    for key in ("val_acc", "val_acc_ci95", "val_acc_extreme", "val_acc_extreme_ci95"):
        assert metrics[key] == pytest.approx(recorded[key])
