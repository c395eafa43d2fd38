"""ViralNet-M's forward cost per image next to LENA's, in one run, on the same device.

    python bench/viralnet_cost.py --device cpu --batch 8 --reps 3

Times one inference forward pass (scores and maps, as the service runs it: model.predict) of
a random batch for: LENA at 224 px (the shipped weights/ config), ViralNet-M as shipped in
weights/viralnet/ (128 px image, 64 px crops) and ViralNet-M at 224 px / 112 px crops.
Random weights (the cost does not depend on them); medians over --reps after one warm-up,
the rows interleaved rep by rep so a noisy machine slows each the same. CUDA runs under fp16
autocast and synchronises before each clock read. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from model.network import NetworkConfig, ViralityNet
from model.predict import predict
from model.viralnet import ViralNet, config_for_arch

Net = ViralityNet | ViralNet


def networks(backbone: str) -> dict[str, Net]:
    return {
        "LENA, 224 px": ViralityNet(NetworkConfig(backbone=backbone), pretrained=False),
        "ViralNet-M, 128 px, 64 px crops": ViralNet(
            config_for_arch("viralnet-m", backbone, input_size=128, crop_size=64), False
        ),
        "ViralNet-M, 224 px, 112 px crops": ViralNet(
            config_for_arch("viralnet-m", backbone, input_size=224, crop_size=112), False
        ),
    }


def runner(net: Net, batch: int, device: torch.device) -> Callable[[], float]:
    size = net.preprocessing.input_size
    x = torch.randn(batch, 3, size, size, device=device)
    net.to(device).eval()

    def run() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        with torch.inference_mode(), torch.autocast(device.type, enabled=device.type == "cuda"):
            predict(net, x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--backbone", default="mobilenet_v2")
    args = parser.parse_args()
    device = torch.device(args.device)
    runs = {name: runner(net, args.batch, device) for name, net in networks(args.backbone).items()}
    for run in runs.values():
        run()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.reps):
        for name, run in runs.items():
            times[name].append(run())
    lena = statistics.median(times["LENA, 224 px"]) / args.batch
    print(f"device {device}, batch {args.batch}, {torch.get_num_threads()} threads\n")
    print("| network | ms / image | x LENA |\n| --- | ---: | ---: |")
    for name, measured in times.items():
        per_image = statistics.median(measured) / args.batch
        print(f"| {name} | {per_image * 1000:.3f} | {per_image / lena:.2f} |")


if __name__ == "__main__":
    main()
