"""Controlled localisation benchmark: does each pooling's viraliency map point at the cue?

Synthetic images (training/synthetic.py) whose score is set by one planted checkerboard cue at a
known box, among distractors, decoys and noise. For each pooling a tiny ViralityNet is
trained from scratch with `training.fit.fit` (eq. (1), fresh pairs each epoch, every pair of
different scores, best epoch on a synthetic validation set). On a held-out synthetic test set
we report pairwise accuracy (every pair with different scores), the pointing game (the eq. (7)
map's maximum inside the cue box), the mean IoU of the CAM-paper box (threshold 0.2 of the
maximum, largest connected component) against the cue box, and the share of those boxes with
IoU >= 0.3 (the overlap the paper uses in section 4.5); the last three on images with a cue.

    .venv/bin/python bench/localisation.py                  # defaults: CPU, a few minutes
    .venv/bin/python bench/localisation.py --repeats 3 --out bench/localisation.md
    .venv/bin/python bench/localisation.py --device cuda
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.images import normalise
from model.network import NetworkConfig, ViralityNet
from training.accuracy import all_ordered_pairs, pair_accuracy
from training.config import TrainConfig
from training.fit import fit
from training.synthetic import SyntheticSet, localisation_metrics, make_synthetic_set

# (label, pooling, eta_init); GAP and GMP ignore eta.
VARIANTS: list[tuple[str, str, float]] = [
    ("GAP", "gap", 1.0),
    ("GMP", "gmp", 0.0),
    ("GNAP-1/2", "gnap", 0.5),
    ("LENA-0", "lena", 0.0),
    ("LENA-1/2", "lena", 0.5),
    ("LENA-1", "lena", 1.0),
]
METRICS = ("pair_acc", "pointing", "iou", "iou30", "eta")
# Every two different cue levels (0..3) satisfy (hi + 1) >= 1.25 (lo + 1): all pairs are used.
RATIO = 1.25


def to_inputs(images: np.ndarray, net: ViralityNet) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> normalised float (N, 3, H, W) with the backbone's mean and std."""
    return normalise(torch.from_numpy(images), net.preprocessing)


@torch.no_grad()
def predict(
    net: ViralityNet, inputs: torch.Tensor, device: str | torch.device, batch: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Scores (N,) and eq. (7) viraliency maps (N, h, w), in eval mode."""
    net.to(device).eval()
    scores, maps = [], []
    for start in range(0, len(inputs), batch):
        s, m = net.viraliency(inputs[start : start + batch].to(device))
        scores.append(s.float().cpu())
        maps.append(m.float().cpu())
    return torch.cat(scores).numpy(), torch.cat(maps).numpy()


def run_variant(
    pooling: str,
    eta: float,
    sets: tuple[SyntheticSet, SyntheticSet, SyntheticSet],
    seed: int,
    args: argparse.Namespace,
) -> dict[str, float]:
    train, val, test = sets
    torch.manual_seed(seed)
    net = ViralityNet(NetworkConfig(backbone="tiny", pooling=pooling, eta_init=eta), False)
    cfg = TrainConfig(
        backbone="tiny",
        pooling=pooling,
        eta_init=eta,
        epochs=args.epochs,
        batch_pairs=args.batch_pairs,
        pairs_per_epoch=args.pairs_per_epoch or len(train),
        protocol="ratio",
        ratio=RATIO,
        lr=args.lr,
        seed=seed,
        device=args.device,
    )
    result = fit(
        net,
        to_inputs(train.images, net)[None],  # one view: no augmentation
        train.scores,
        to_inputs(val.images, net),
        val.scores,
        cfg,
        args.device,
    )
    net.load_state_dict(result.model_state)
    scores, maps = predict(net, to_inputs(test.images, net), args.device)
    loc = localisation_metrics(maps, test.boxes, test.images.shape[1:3], args.threshold)
    eta_mean = float(net.pool.eta_values().float().mean())  # GAP: 1, GMP: 0
    return {
        "pair_acc": pair_accuracy(scores, all_ordered_pairs(test.scores)),
        "pointing": loc.pointing,
        "iou": loc.iou,
        "iou30": loc.iou_at_30,
        "eta": eta_mean,
    }


def _cell(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"


def table(rows: list[tuple[str, list[dict[str, float]], float]]) -> str:
    lines = [
        "| pooling | pairwise acc. | pointing game | mean IoU | IoU >= 0.3 | mean eta (end) "
        "| train s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, runs, seconds in rows:
        cells = [_cell([r[m] for r in runs]) for m in METRICS]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {seconds:.0f} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--n-val", type=int, default=300, help="for picking the best epoch")
    p.add_argument("--n-test", type=int, default=600)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--size", type=int, default=64, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0, help="data and first training seed")
    p.add_argument("--repeats", type=int, default=1, help="training seeds per pooling")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads; 0: torch's own")
    p.add_argument("--pairs-per-epoch", type=int, default=0, help="0: as many as train images")
    p.add_argument("--batch-pairs", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3, help="peak of fit's one-cycle schedule")
    p.add_argument("--threshold", type=float, default=0.2, help="CAM box threshold")
    p.add_argument("--only", nargs="*", help="labels of the variants to run (default: all)")
    p.add_argument("--out", type=Path, help="also write the markdown report here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    command = "python bench/localisation.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    t0 = time.perf_counter()
    sets = (
        make_synthetic_set(args.n_train, args.size, seed=args.seed),
        make_synthetic_set(args.n_val, args.size, seed=args.seed + 1_000_003),
        make_synthetic_set(args.n_test, args.size, seed=args.seed + 2_000_006),
    )
    rows = []
    for label, pooling, eta in VARIANTS:
        if args.only and label not in args.only:
            continue
        start = time.perf_counter()
        runs = [run_variant(pooling, eta, sets, args.seed + r, args) for r in range(args.repeats)]
        rows.append((label, runs, (time.perf_counter() - start) / args.repeats))
        print(f"{label}: {runs}", file=sys.stderr, flush=True)
    wall = time.perf_counter() - t0
    test = sets[2]
    box = test.boxes[test.has_cue()]
    area = (box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1]) / float(args.size**2)
    seeds = f"seed {args.seed}" + (
        f", training seeds {args.seed}..{args.seed + args.repeats - 1}" if args.repeats > 1 else ""
    )
    report = "\n".join(
        [
            "## Synthetic localisation benchmark",
            "",
            f"Command: `{command.strip()}`",
            "",
            f"Synthetic images of {args.size} px: train {len(sets[0])}, validation "
            f"{len(sets[1])} (best epoch), test {len(test)} ({int(test.has_cue().sum())} with a "
            f"cue). Tiny backbone from scratch, `training.fit.fit`, {args.epochs} epochs, "
            f"{seeds}, device {args.device}, torch threads {torch.get_num_threads()}; "
            f"wall time {wall:.0f} s.",
            "",
            "Pairwise accuracy: all test pairs with different scores (chance 0.5). Pointing "
            "game, mean IoU and IoU >= 0.3: test images with a cue, eq. (7) maps upsampled "
            f"bilinearly, CAM box at threshold {args.threshold}. A uniformly random point "
            f"lands in the cue box {area.mean():.3f} of the time.",
            *(
                [f"Cells: mean ± std over {args.repeats} training seeds."]
                if args.repeats > 1
                else []
            ),
            "",
            table(rows),
            "",
        ]
    )
    print(report)
    if args.out:
        args.out.write_text(report)


if __name__ == "__main__":
    main()
