"""How much the reduced-scale decode moves a checkpoint's scores on its validation images.

    OMP_NUM_THREADS=1 python -m bench.decode_scores weights \
        --data ../shared/data/dankmemes2020-task1

Scores every validation image of the checkpoint's recorded split twice, through the one
preprocessing path (model.images.prepare): decoding every pixel (DECODE_SCALE = 0, as before
the reduced decode) and as shipped (DECODE_SCALE = 2). Prints both accuracies (the evaluation's
protocols), the largest and mean |change| of s(I), and the share of image pairs that keep
their order.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from model import images
from model.checkpoint import load_checkpoint
from model.network import ViralityNet
from training.data import read_data, scores_array, split_from_json, split_root
from training.evaluate import held_out_metrics


@torch.no_grad()
def scores_at(net: ViralityNet, paths: list[Path], decode_scale: int) -> np.ndarray:
    """s(I) of each file, decoded with model.images.DECODE_SCALE = decode_scale. -> (N,)"""
    images.DECODE_SCALE, saved = decode_scale, images.DECODE_SCALE
    try:
        size = net.preprocessing.input_size
        pixels = np.stack([images.prepare(p, size).pixels for p in paths])
    finally:
        images.DECODE_SCALE = saved
    out = [
        net(images.normalise(torch.from_numpy(pixels[i : i + 32]), net.preprocessing))
        for i in range(0, len(pixels), 32)
    ]
    return torch.cat(out).double().numpy()


def pair_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Share of pairs (i < j) that a and b order the same way (ties count as a disagreement)."""
    i, j = np.triu_indices(len(a), k=1)
    return float(np.mean(np.sign(a[i] - a[j]) == np.sign(b[i] - b[j])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--data", type=Path, required=True, help="the DANKMEMES folder")
    args = parser.parse_args()
    net, info = load_checkpoint(args.checkpoint, "cpu")
    all_images, _ = read_data(args.data, "dankmemes", "error")
    split = split_from_json(
        info.training["data"]["split"], all_images, split_root(args.data, "dankmemes")
    )
    paths, truth = [im.path for im in split.val], scores_array(split.val)
    seed = int(info.training.get("config", {}).get("seed", 0))
    full, reduced = scores_at(net, paths, 0), scores_at(net, paths, 2)
    change = np.abs(reduced - full)
    result = {
        "val_images": len(paths),
        "full_decode": held_out_metrics(full, truth, None, seed=seed),
        "reduced_decode": held_out_metrics(reduced, truth, None, seed=seed),
        "max_abs_score_change": float(change.max()),
        "mean_abs_score_change": float(change.mean()),
        "score_std": float(full.std()),
        "pair_order_agreement": pair_agreement(full, reduced),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
