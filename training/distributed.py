"""Data-parallel training under torchrun: one process per device, gloo on CPU, nccl on CUDA.

Each rank trains on its share of every epoch's pairs (training/fit.py); rank 0 fills the feature
cache first, validates and saves.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def launched_rank() -> int:
    """This process's rank as torchrun set it (0 outside torchrun), before any process group."""
    return int(os.environ.get("RANK", "0"))


def distributed_backend(device: torch.device) -> str:
    """nccl for CUDA tensors, gloo for CPU ones: the training device decides, not the host."""
    return "nccl" if device.type == "cuda" else "gloo"


def init_distributed(device: torch.device) -> tuple[int, int, torch.device]:
    """Join the torchrun process group when there is one: (rank, world size, this rank's device)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, device
    dist.init_process_group(distributed_backend(device))
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        device = torch.device("cuda", torch.cuda.current_device())
    return dist.get_rank(), dist.get_world_size(), device


def barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def finish(world: int) -> None:
    if world > 1:
        dist.destroy_process_group()
