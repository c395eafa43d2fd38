"""CPU inference variants, side by side: speed at batch 1, 8, 32 and agreement with float32.

Variants of the same checkpoint's `viraliency()` (scores and eq. (7) maps, what
`Engine.predict` runs), each timed on the same real images, interleaved (one repetition of
every variant, then the next), median per batch:

- `fp32`: eager float32, contiguous (NCHW) tensors (the engine's default before issue 15);
- `channels_last`: the same weights and input in NHWC memory format (oneDNN's preferred layout);
- `sorted`: channels_last with LENA always sorting (the engine before the sort-free path for
  etas of 0 and 1, model/lena.py): what the two sorts cost;
- `folded`: channels_last with the batch norms folded into the convolutions (model/fold.py):
  the engine's CPU default (`Engine.tune_for_cpu`);
- `compile`: `torch.compile` (inductor: needs a C compiler) on channels_last;
- `bf16`: bf16 autocast on channels_last (fast only where the CPU has bf16 instructions);
- `int8-static`: the trunk quantised to int8 (FX graph mode, x86 backend, calibrated on the
  images after the timed ones); dynamic quantisation would touch only the 1280 -> 1 head.

Agreement: over every pair (i, j) of the images, the share ordered the same way as by the
float32 scores (pairwise agreement, in %); a variant may differ from float32 by at most 0.1
point (issue 15). Real images: `--images DIR` (e.g. the DANKMEMES images in /work/shared/data;
never committed), decoded and squashed by the service's own `app.images.prepare`.

    OMP_NUM_THREADS=2 .venv/bin/python bench/cpu_inference.py --checkpoint weights \
        --images /work/shared/data/dankmemes2020-task1/images --count 256 --reps 5

`--profile` also prints, per variant, the torch ops with the most self CPU time at the first
batch size (torch.profiler over 5 forward passes).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.images import prepare
from model.checkpoint import load_checkpoint
from model.fold import fold_batchnorms
from model.images import normalise
from model.lena import LenaPool
from model.network import ViralityNet

Forward = Callable[[Tensor], tuple[Tensor, Tensor]]


def load_images(folder: Path, count: int, size: int) -> np.ndarray:
    """The first `count` images of the folder (sorted by name), decoded and squashed."""
    paths = sorted(p for p in folder.iterdir() if p.is_file())[:count]
    return np.stack([prepare(p.read_bytes(), p.name, 40_000_000, size).pixels for p in paths])


def int8_static(net: ViralityNet, calibration: Tensor) -> ViralityNet:
    """The trunk quantised to int8 (FX graph mode, x86 backend, per-channel weights),
    calibrated on `calibration` (a normalised batch); LENA and the head stay float32."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    quantised = _copy(net)
    prepared = prepare_fx(quantised.trunk, get_default_qconfig_mapping("x86"), (calibration,))
    with torch.inference_mode():
        for k in range(0, len(calibration), 16):
            prepared(calibration[k : k + 16])
    quantised.trunk = convert_fx(prepared)
    return quantised


def variants(
    net: ViralityNet, which: list[str], calibration: Tensor | None = None
) -> dict[str, tuple[Forward, bool]]:
    """name -> (forward on a normalised batch, wants channels_last input)."""
    fp32 = net
    last = _copy(net).to(memory_format=torch.channels_last)
    made: dict[str, tuple[Forward, bool]] = {
        "fp32": (fp32.viraliency, False),
        "channels_last": (last.viraliency, True),
    }
    if "sorted" in which:
        sorting = _copy(net).to(memory_format=torch.channels_last)
        for layer in sorting.modules():
            if isinstance(layer, LenaPool):
                layer.ends = lambda k, device: None  # type: ignore[method-assign]
        made["sorted"] = (sorting.viraliency, True)
    if "folded" in which:
        folded = _copy(net)
        fold_batchnorms(folded)
        made["folded"] = (folded.to(memory_format=torch.channels_last).viraliency, True)
    if "bf16" in which:

        def bf16(x: Tensor) -> tuple[Tensor, Tensor]:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                scores, maps = last.viraliency(x)
            return scores.float(), maps.float()

        made["bf16"] = (bf16, True)
    if "int8-static" in which and calibration is not None:
        try:
            made["int8-static"] = (int8_static(net, calibration).viraliency, False)
        except Exception as exc:  # the FX quantisation path is deprecated and may be missing
            print(f"int8-static unavailable: {type(exc).__name__}: {exc}", file=sys.stderr)
    if "compile" in which:
        compiled = torch.compile(_copy(net).to(memory_format=torch.channels_last).viraliency)
        made["compile"] = (compiled, True)
    return {name: made[name] for name in which if name in made}


def _copy(net: ViralityNet) -> ViralityNet:
    return copy.deepcopy(net)


def inputs(pixels: np.ndarray, pre: object, channels_last: bool) -> Tensor:
    x = normalise(torch.from_numpy(pixels), pre)  # type: ignore[arg-type]
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()


@torch.inference_mode()
def all_scores(forward: Forward, images: np.ndarray, pre: object, last: bool) -> np.ndarray:
    return np.concatenate(
        [
            forward(inputs(images[k : k + 32], pre, last))[0].numpy()
            for k in range(0, len(images), 32)
        ]
    )


def pairwise_agreement(reference: np.ndarray, scores: np.ndarray) -> float:
    """% of pairs (i < j) with s_i - s_j of the same sign as in the reference (ties agree if
    both tie)."""
    i, j = np.triu_indices(len(reference), k=1)
    return float(np.mean(np.sign(reference[i] - reference[j]) == np.sign(scores[i] - scores[j])))


@torch.inference_mode()
def time_batches(
    made: dict[str, tuple[Forward, bool]],
    images: np.ndarray,
    pre: object,
    sizes: list[int],
    reps: int,
) -> dict[tuple[str, int], float]:
    """Median seconds per forward, interleaving the variants within each repetition."""
    times: dict[tuple[str, int], list[float]] = {}
    for size in sizes:
        batch = images[:size]
        for forward, last in made.values():  # warm-up (and compilation) for this shape
            forward(inputs(batch, pre, last))
        for _ in range(reps):
            for name, (forward, last) in made.items():
                started = time.perf_counter()
                forward(inputs(batch, pre, last))
                times.setdefault((name, size), []).append(time.perf_counter() - started)
    return {key: statistics.median(values) for key, values in times.items()}


@torch.inference_mode()
def op_shares(made: dict[str, tuple[Forward, bool]], batch: np.ndarray, pre: object) -> None:
    """Per variant, the torch ops that take the most CPU time in 5 forward passes (profiler)."""
    for name, (forward, last) in made.items():
        x = inputs(batch, pre, last)
        forward(x)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(5):
                forward(x)
        events = [e for e in prof.key_averages() if not e.key.startswith("aten::to")]
        total = sum(e.self_cpu_time_total for e in events)
        top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:6]
        shares = ", ".join(f"{e.key} {100 * e.self_cpu_time_total / total:.0f}%" for e in top)
        print(f"{name} (batch {len(batch)}): {shares}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", default="weights")
    parser.add_argument("--images", type=Path, required=True, help="folder of real images")
    parser.add_argument("--count", type=int, default=256, help="images for the agreement")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--calibration", type=int, default=64, help="images to calibrate int8")
    parser.add_argument(
        "--profile", action="store_true", help="also print each variant's costliest torch ops"
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["fp32", "channels_last", "sorted", "folded", "compile", "bf16", "int8-static"],
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    net, info = load_checkpoint(Path(args.checkpoint), "cpu")
    pre = info.preprocessing
    loaded = load_images(args.images, args.count + args.calibration, pre.input_size)
    images, held_out = loaded[: args.count], loaded[args.count :]
    started = time.perf_counter()
    calibration = inputs(held_out, pre, False) if len(held_out) else None
    made = variants(net.eval(), args.variants, calibration)
    reference = all_scores(made["fp32"][0], images, pre, False)
    agreement = {}
    for name, (forward, last) in made.items():
        scores = all_scores(forward, images, pre, last)
        agreement[name] = (
            100.0 * pairwise_agreement(reference, scores),
            float(np.max(np.abs(scores - reference))),
        )
        print(f"{name}: agreement {agreement[name]}", file=sys.stderr, flush=True)
    print(f"set-up and agreement: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    if args.profile:
        op_shares(made, images[: args.batch[0]], pre)
    timed = time_batches(made, images, pre, args.batch, args.reps)
    header = " | ".join(f"batch {b} images/s" for b in args.batch)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} torch threads, "
          f"{len(images)} images ({len(images) * (len(images) - 1) // 2} pairs)")  # fmt: skip
    print(f"\n| variant | {header} | pairwise agreement with fp32 % | max abs score diff |")
    print("| --- |" + " ---: |" * (len(args.batch) + 2))
    for name in made:
        speeds = " | ".join(f"{b / timed[(name, b)]:.1f}" for b in args.batch)
        agree, diff = agreement[name]
        print(f"| {name} | {speeds} | {agree:.2f} | {diff:.4f} |")


if __name__ == "__main__":
    main()
