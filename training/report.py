"""The paper's comparison on our data: a markdown report with plots.

    python -m training.report --runs runs --out weights/report

Reads the checkpoints that `scripts/train_comparison` wrote (one per pooling, same split) and
adds: a non-deep baseline in the spirit of Deza & Parikh (ridge regression of log engagement on
frozen ImageNet features); the learned eta histogram (Figure 10 analogue); and the rho-masking
test (Figure 7 analogue): keep the rho hottest pixels of the viraliency map, replace the rest
by the mean colour, and count how often the masked image still scores above the original.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F

from model.checkpoint import load_checkpoint
from model.devices import resolve_device
from model.images import normalise
from model.network import NetworkConfig, ViralityNet
from training.cache import FromBlock, cached_inputs
from training.data import ScoredImage, read_dankmemes, scores_array, split_from_json
from training.evaluate import bootstrap_accuracy
from training.pairs import ratio_pairs
from training.ridge import fit_ridge

matplotlib.use("Agg")
import matplotlib.pyplot as plt

log = logging.getLogger("viraliency.report")
RUNS = ("gap", "gmp", "gnap", "lena-0", "lena-0.5", "lena-1")
RHOS = (0.1, 0.2, 0.4, 0.6)


def comparison_rows(runs: Path) -> list[dict[str, Any]]:
    rows = []
    for name in RUNS:
        if not (runs / name / "config.json").is_file():
            continue
        config = json.loads((runs / name / "config.json").read_text())
        m = config["metrics"]
        rows.append(
            {
                "method": name,
                **{k: m[k] for k in m if k.startswith("val_acc")},
                "best_epoch": m["best_epoch"],
                "eta_mean": config["eta"]["mean"],
            }
        )
    return rows


@torch.no_grad()
def linear_probe(
    train: list[ScoredImage],
    val: list[ScoredImage],
    ratio: float,
    device: torch.device,
    backbone: str = "mobilenet_v2",
) -> dict[str, Any]:
    """Ridge (training.ridge) on frozen ImageNet GAP features of the plain (unaugmented) images."""
    torch.manual_seed(0)  # backbones without ImageNet weights (tests) start from a fixed draw
    net = ViralityNet(NetworkConfig(backbone, "gap"), pretrained=True).eval()
    whole_trunk = FromBlock(net, len(net.trunk))  # type: ignore[arg-type]

    def features(images: list[ScoredImage]) -> np.ndarray:
        cached = cached_inputs(whole_trunk, [i.path for i in images], 1, 0, device)[0]
        return cached.float().mean(dim=(2, 3)).double().numpy()  # (N, 1280)

    probe = fit_ridge(features(train), scores_array(train), ratio)
    predicted = probe(features(val))
    pairs = ratio_pairs(scores_array(val), ratio)
    acc, lo, hi = bootstrap_accuracy(predicted, pairs, len(val))
    return {
        "method": "linear probe (frozen features)",
        "val_acc": acc,
        "val_acc_ci95": [lo, hi],
        "ridge_lambda": probe.penalty,
    }


def keep_hottest(heat: torch.Tensor, rho: float) -> torch.Tensor:
    """Mask of exactly round(rho * P) hottest pixels per row, ties broken by position.

    (B, P) -> bool (B, P). A threshold (`heat >= quantile`) would keep every pixel tied at
    the threshold, far more than rho on flat maps.
    """
    k = round(rho * heat.shape[1])
    keep = torch.zeros_like(heat, dtype=torch.bool)
    return keep.scatter_(1, heat.topk(k, dim=1).indices, True)


@torch.no_grad()
def rho_masking(
    checkpoint: Path,
    val: list[ScoredImage],
    device: torch.device,
    rhos: tuple[float, ...] = RHOS,
) -> list[float]:
    """For each rho: share of images whose rho-hottest-pixels version outscores the original."""
    net, _ = load_checkpoint(checkpoint, device)
    views = cached_inputs(FromBlock(net, 0), [i.path for i in val], 1, 0, device)[0]
    wins = np.zeros(len(rhos))
    for start in range(0, len(views), 32):
        x = normalise(views[start : start + 32].to(device), net.preprocessing)  # (B, 3, S, S)
        scores, maps = net.viraliency(x)
        heat = F.interpolate(maps[:, None], size=x.shape[-2:], mode="bilinear")[:, 0].flatten(1)
        for r, rho in enumerate(rhos):
            keep = keep_hottest(heat, rho).view(len(x), 1, *x.shape[-2:])
            wins[r] += float((net(x * keep) > scores).sum())  # masked pixels -> the mean colour
    return (wins / len(views)).tolist()


def plot_eta(runs: Path, out: Path) -> dict[str, np.ndarray]:
    """Histogram of the learned eta per channel of each LENA run (Figure 10 analogue), saved as
    eta_histogram.png; returns the plotted values by run."""
    etas: dict[str, np.ndarray] = {}
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name in ("lena-0", "lena-0.5", "lena-1"):
        if (runs / name).is_dir():
            net, _ = load_checkpoint(runs / name)
            etas[name] = eta = net.pool.eta_values().numpy()
            ax.hist(eta, bins=20, range=(0, 1), histtype="step", linewidth=1.5, label=name)
    ax.set(xlabel="learned eta", ylabel="channels", title="LENA: learned eta per channel")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "eta_histogram.png", dpi=120)
    plt.close(fig)
    return etas


def plot_rho(curves: dict[str, list[float]], out: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, curve in curves.items():
        ax.plot(RHOS, curve, marker="o", label=name)
    ax.set(
        xlabel="rho (share of pixels kept)",
        ylabel="masked image wins",
        title="Masking all but the hottest pixels",
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "rho_masking.png", dpi=120)
    plt.close(fig)


def markdown(rows: list[dict[str, Any]], rho: dict[str, list[float]]) -> str:
    lines = [
        "| method | val acc (pairs >= 2x apart) | 95% CI | top-k vs bottom-k | 95% CI |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        ci = r["val_acc_ci95"]
        ext = (
            (
                f"{100 * r['val_acc_extreme']:.1f} | [{100 * r['val_acc_extreme_ci95'][0]:.1f}, "
                f"{100 * r['val_acc_extreme_ci95'][1]:.1f}]"
            )
            if "val_acc_extreme" in r
            else "- | -"
        )
        lines.append(
            f"| {r['method']} | {100 * r['val_acc']:.1f} | "
            f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}] | {ext} |"
        )
    lines += ["", "| rho | " + " | ".join(rho) + " |", "| --- |" + " --- |" * len(rho)]
    for i, value in enumerate(RHOS):
        lines.append(
            f"| {value} | " + " | ".join(f"{100 * c[i]:.1f}%" for c in rho.values()) + " |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--runs", type=Path, default=Path("runs"), help="scripts/train_comparison's folder"
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=Path("../shared/data/dankmemes2020-task1"),
        help="the DANKMEMES folder the runs were trained on",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("weights/report"), help="where the report goes"
    )
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    device = resolve_device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = comparison_rows(args.runs)
    reference = json.loads((args.runs / rows[0]["method"] / "config.json").read_text())
    split = split_from_json(
        reference["training"]["data"]["split"], read_dankmemes(args.data), args.data / "images"
    )
    train, val = list(split.train), list(split.val)
    rows.append(linear_probe(train, val, reference["metrics"]["ratio"], device))
    rho = {
        name: rho_masking(args.runs / name, val, device)
        for name in ("gap", "gmp", "lena-0.5")
        if (args.runs / name).is_dir()
    }
    plot_eta(args.runs, args.out)
    plot_rho(rho, args.out)
    (args.out / "comparison.md").write_text(markdown(rows, rho))
    (args.out / "results.json").write_text(json.dumps({"rows": rows, "rho": rho}, indent=2))
    print(markdown(rows, rho))


if __name__ == "__main__":
    main()
