"""Plain DistributedDataParallel when launched by torchrun (``WORLD_SIZE`` > 1); a no-op otherwise.

    torchrun --nproc_per_node=4 train_stabletts.py --data dataset/ --out run/

Every rank prepares the same clips (the mel cache is written atomically, so ranks may share it) and builds
the same length-bucketed batches from the same seed; rank r takes batches r, r + W, ... (the list is padded
by repeating batches so every rank takes the same number of steps). Losses are averaged over ranks; only
rank 0 writes checkpoints and state and calls the hooks.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_distributed(device: torch.device) -> tuple[Ranks, torch.device]:
    """Join the torchrun process group when there is one; returns the ranks and this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks(), device
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank = dist.get_rank()
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    logger.info("Distributed training: rank %d of %d on %s", rank, world, device)
    return Ranks(rank, world), device


def shard(batches: list[list[int]], ranks: Ranks) -> list[list[int]]:
    if not ranks.enabled or not batches:
        return batches
    padded = batches + batches[: (-len(batches)) % ranks.world]
    return padded[ranks.rank :: ranks.world]


def sum_over_ranks(values: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    if ranks.enabled:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def barrier(ranks: Ranks) -> None:
    if ranks.enabled:
        dist.barrier()
