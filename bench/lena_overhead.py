"""LENA's cost as a share of a full training step, next to GAP, in one run.

    python bench/lena_overhead.py --device cpu --batch 64 --reps 3

For each pooling (gap, lena) it times, on the same random batch:
- the pooling layer alone, forward + backward, on the trunk's real feature maps;
- a full siamese training step (forward of both branches, eq. (1) loss, backward, AdamW step).
The share is pool time / step time. Targets (issue 2): <= 3% on the GPU, <= 5% on the CPU.
Timings are medians over --reps after one warm-up; CUDA timings synchronise first.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from model.network import NetworkConfig, ViralityNet, pairwise_loss


def timed(fn: Callable[[], object], device: torch.device, reps: int) -> float:
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()  # warm-up (allocator, cudnn autotune)
    times = []
    for _ in range(reps):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(pooling: str, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    torch.manual_seed(0)
    net = ViralityNet(NetworkConfig(args.backbone, pooling, 0.5), pretrained=False).to(device)
    size = net.preprocessing.input_size
    half = args.batch // 2
    images = torch.randn(args.batch, 3, size, size, device=device)
    labels = torch.randint(0, 2, (half,), device=device).float()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    amp = device.type == "cuda"

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = net.pair_logits(images[:half], images[half:]).float()
        opt.zero_grad(set_to_none=True)
        pairwise_loss(logits, labels).backward()
        opt.step()

    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        features = net.trunk(images)
    features = features.detach().requires_grad_(True)
    grad = torch.randn(features.shape[:2], device=device, dtype=features.dtype)

    def pool_only() -> None:
        features.grad = None
        net.pool(features).backward(grad)

    return {
        "pool": timed(pool_only, device, args.pool_reps),
        "step": timed(step, device, args.reps),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--pool-reps", type=int, default=50)
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    threads = torch.get_num_threads()
    print(
        f"device: {name} (torch {torch.__version__}, {threads} threads), backbone "
        f"{args.backbone}, batch {args.batch} ({args.batch // 2} pairs), 224 px"
    )
    results = {p: measure(p, args, device) for p in ("gap", "lena")}
    print("| pooling | pool fwd+bwd (ms) | training step (ms) | pool share of step |")
    print("| --- | --- | --- | --- |")
    for pooling, r in results.items():
        share = 100 * r["pool"] / r["step"]
        print(f"| {pooling} | {1e3 * r['pool']:.2f} | {1e3 * r['step']:.0f} | {share:.2f}% |")
    extra = results["lena"]["pool"] - results["gap"]["pool"]
    print(
        f"\nLENA - GAP pooling time: {1e3 * extra:.2f} ms = "
        f"{100 * extra / results['gap']['step']:.2f}% of a GAP training step"
    )


if __name__ == "__main__":
    main()
