"""Small real datasets and short training runs shared by the model tests."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch

from training.train import TrainConfig


def bright_squares(n: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """uint8 (N, 64, 64, 3) noise images with a square whose brightness is the score."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 80, size=(n, 64, 64, 3), dtype=np.uint8)
    scores = rng.integers(1, 256, size=n).astype(float)
    for img, s in zip(images, scores, strict=True):
        y, x = rng.integers(0, 48, size=2)
        img[y : y + 16, x : x + 16] = int(s)
    return torch.from_numpy(images), scores


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


def write_dankmemes(folder: Path, n: int = 24) -> Path:
    """The DANKMEMES layout (labels.csv + images/) over bright_squares: "meme" is planted (the
    brighter half), the other two categories alternate."""
    images, scores = bright_squares(n, seed=3)
    (folder / "images").mkdir(parents=True)
    median = np.median(scores)
    lines = ["File,Engagement,Date,Manipulation,Visual,Text,Meme"]
    for i, (img, score) in enumerate(zip(images.numpy(), scores, strict=True)):
        cv2.imwrite(str(folder / "images" / f"{i}.png"), img)
        people = "Rossi" if i % 3 == 0 else "0"
        lines.append(f"{i}.png,{int(score)},2020-01-01,{i % 2},{people},,{int(score > median)}")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder


def tiny_run(folder: Path, out: Path, **changes: object) -> TrainConfig:
    """A short training run of the tiny backbone on write_dataset's scores.csv."""
    cfg = TrainConfig(
        data=str(folder / "scores.csv"),
        data_format="scores",
        backbone="tiny",
        freeze_blocks=0,
        views=1,
        epochs=2,
        pairs_per_epoch=128,
        batch_pairs=16,
        lr=3e-3,
        val_fraction=0.25,
        out=str(out),
    )
    return replace(cfg, **changes)  # type: ignore[arg-type]
