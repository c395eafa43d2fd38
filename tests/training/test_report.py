"""The comparison report: exact rho masking, the linear probe, the eta histogram, markdown."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from model.checkpoint import CheckpointInfo, save_checkpoint
from model.network import NetworkConfig, ViralityNet
from training.data import ScoredImage
from training.report import (
    RHOS,
    comparison_rows,
    keep_hottest,
    linear_probe,
    markdown,
    plot_eta,
    rho_masking,
)

CPU = torch.device("cpu")


def save_tiny(
    folder: Path, pooling: str = "lena", eta: float | None = None, **metrics: object
) -> ViralityNet:
    torch.manual_seed(0)
    net = ViralityNet(NetworkConfig(backbone="tiny", pooling=pooling), pretrained=False).eval()
    if eta is not None:
        with torch.no_grad():
            net.pool.eta.fill_(eta)
    save_checkpoint(
        net, CheckpointInfo(net.config, net.preprocessing, metrics=dict(metrics)), folder
    )
    return net


def grey_images(folder: Path, levels: np.ndarray, seed: int) -> list[ScoredImage]:
    """Flat grey images with a little noise; each image's score is its grey level."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images = []
    for i, level in enumerate(levels):
        pixels = np.clip(level + rng.normal(0, 4, (48, 48, 3)), 0, 255).astype(np.uint8)
        path = folder / f"{seed}-{i}.png"
        Image.fromarray(pixels).save(path)
        images.append(ScoredImage(path, float(level)))
    return images


# --- rho masking ---------------------------------------------------------------------------


def test_keep_hottest_keeps_exactly_rho_even_on_ties() -> None:
    heat = torch.zeros(3, 100)
    heat[0, :50] = 1.0  # half the map tied at its maximum
    heat[1] = torch.arange(100.0)  # all distinct
    # row 2: a flat map, every pixel tied
    for rho in RHOS:
        keep = keep_hottest(heat, rho)
        assert keep.sum(dim=1).tolist() == [round(rho * 100)] * 3
    keep = keep_hottest(heat, 0.1)
    assert heat[0][keep[0]].eq(1.0).all()  # the kept pixels are among the hottest
    assert keep[1].nonzero().flatten().tolist() == list(range(90, 100))


def test_rho_masking_on_a_tiny_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the view cache goes to ./cache
    save_tiny(tmp_path / "lena")
    val = grey_images(tmp_path / "imgs", np.linspace(20, 240, 6), seed=0)
    wins = rho_masking(tmp_path / "lena", val, CPU, rhos=(0.2, 1.0))
    assert len(wins) == 2
    assert all(w * 6 == round(w * 6) for w in wins)  # a share of the 6 images
    assert wins[1] == 0.0  # keeping every pixel gives the same image: it cannot win


# --- the linear probe ----------------------------------------------------------------------


def test_linear_probe_learns_a_score_set_by_brightness(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    train = grey_images(tmp_path / "train", rng.uniform(10, 250, 60).round(), seed=1)
    val = grey_images(tmp_path / "val", rng.uniform(10, 250, 30).round(), seed=2)
    probe = linear_probe(train, val, 2.0, CPU, backbone="tiny")
    assert probe["val_acc"] > 0.9, probe
    lo, hi = probe["val_acc_ci95"]
    assert lo <= probe["val_acc"] <= hi
    assert probe["ridge_lambda"] in [10.0**p for p in range(6)]


# --- eta histogram, comparison table -------------------------------------------------------


def test_eta_histogram_plots_each_lena_run(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    nets = {
        name: save_tiny(runs / name, eta=eta) for name, eta in (("lena-0", 0.1), ("lena-1", 0.8))
    }
    save_tiny(runs / "gap", pooling="gap")  # not a LENA run: not in the histogram
    etas = plot_eta(runs, tmp_path)
    assert sorted(etas) == ["lena-0", "lena-1"]
    for name, net in nets.items():
        np.testing.assert_array_equal(etas[name], net.pool.eta_values().numpy())
    with Image.open(tmp_path / "eta_histogram.png") as png:
        assert png.format == "PNG"
        assert png.size == (720, 420)  # 6 x 3.5 inches at 120 dpi


def test_comparison_rows_and_markdown(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    save_tiny(
        runs / "lena-0.5",
        eta=0.3,
        val_acc=0.605,
        val_acc_ci95=[0.55, 0.661],
        val_acc_extreme=0.702,
        val_acc_extreme_ci95=[0.6, 0.8],
        best_epoch=4,
    )
    save_tiny(runs / "gap", pooling="gap", val_acc=0.58, val_acc_ci95=[0.52, 0.64], best_epoch=2)
    rows = comparison_rows(runs)
    assert [r["method"] for r in rows] == ["gap", "lena-0.5"]  # the paper's order
    assert rows[1]["eta_mean"] == pytest.approx(0.3)
    assert rows[0]["eta_mean"] == 1.0  # GAP is LENA at eta = 1
    rows.append({"method": "probe", "val_acc": 0.561, "val_acc_ci95": [0.5, 0.62]})
    text = markdown(rows, {"gap": [0.1, 0.2, 0.3, 0.4], "lena-0.5": [0.5, 0.25, 0.125, 0.0]})
    lines = text.splitlines()
    assert lines[2] == "| gap | 58.0 | [52.0, 64.0] | - | - |"
    assert lines[3] == "| lena-0.5 | 60.5 | [55.0, 66.1] | 70.2 | [60.0, 80.0] |"
    assert lines[4] == "| probe | 56.1 | [50.0, 62.0] | - | - |"
    assert lines[6] == "| rho | gap | lena-0.5 |"
    assert lines[8:] == [
        f"| {rho} | {a} | {b} |"
        for rho, a, b in zip(
            RHOS,
            ["10.0%", "20.0%", "30.0%", "40.0%"],
            ["50.0%", "25.0%", "12.5%", "0.0%"],
            strict=True,
        )
    ]
