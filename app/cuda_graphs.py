"""The forward pass as CUDA graphs: captured once per batch-size bucket, replayed per batch.

Eager PyTorch launches each of the network's few hundred kernels from Python. In the service
the engine thread does that while the HTTP loop and the decode threads want the same GIL, and
every batch size it has not seen before stalls it for seconds on the GPU (first-use kernel
selection; bench/RESULTS.md, "GPU run"). A graph replay is one call with fixed shapes.

A batch is padded up to the smallest bucket that holds it (1, 2, 4, ... and the largest
batch): in eval mode every row is scored on its own, so the pad rows change no score and their
outputs are dropped. Each bucket's graph has its own memory pool (no ordering rules between
replays); outputs live in the graph's memory until its next replay, so the one thread that
calls `GraphedForward` must copy them out first (`Engine.predict` does: `.cpu()`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from model.predict import Predicted

Forward = Callable[[Tensor], Predicted]


def buckets(largest: int) -> list[int]:
    """Batch sizes with a graph: the powers of two below `largest`, and `largest`."""
    sizes = [1 << k for k in range(largest.bit_length()) if 1 << k < largest]
    return [*sizes, largest]


def bucket_for(n: int, sizes: list[int]) -> int | None:
    """The smallest bucket holding n rows; None when n is larger than every bucket."""
    return next((size for size in sizes if size >= n), None)


class GraphedForward:
    """`forward` captured at each bucket size on `device`; call it like `forward`."""

    def __init__(
        self, forward: Forward, sample: tuple[int, ...], device: torch.device, sizes: list[int]
    ) -> None:
        self.sizes = sorted(sizes)
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, Tensor, Predicted]] = {}
        for size in self.sizes:
            static = torch.zeros(size, *sample, device=device)
            # Warm up on a side stream, as torch's capture recipe asks: lazy initialisation
            # and kernel selection happen here, not inside the capture.
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                for _ in range(2):
                    forward(static)
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                out = forward(static)
            self._graphs[size] = (graph, static, out)

    def __call__(self, x: Tensor) -> Predicted | None:
        """Replay the bucket's graph on x (B, ...); None when B is above every bucket."""
        n = x.shape[0]
        size = bucket_for(n, self.sizes)
        if size is None:
            return None
        graph, static, out = self._graphs[size]
        static[:n].copy_(x)
        graph.replay()

        def rows(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[:n]

        return Predicted(
            out.scores[:n],
            out.maps[:n],
            rows(out.transforms),
            rows(out.platform_scores),
            rows(out.platform_maps),
        )
