"""``torchrun`` support: process-group set-up and DDP wrapping (NCCL on GPU, gloo on CPU)."""

from __future__ import annotations

import logging
import os

import torch
import torch.distributed as dist

from medgan.utils.device import select_device

logger = logging.getLogger(__name__)


def world_size_from_env() -> int:
    """``WORLD_SIZE`` set by ``torchrun`` (1 when not launched by it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def process_group_needed() -> bool:
    """True when launched by ``torchrun`` and no process group exists yet (``setup_distributed`` makes one).

    Re-creating a group on the same ``MASTER_PORT`` right after destroying one races (a fast rank can
    join the old store and hang the other), so entry points destroy only the group they created.
    """
    return world_size_from_env() > 1 and not (dist.is_available() and dist.is_initialized())


def setup_distributed(device: str = "auto") -> tuple[torch.device, int, int]:
    """Initialise the process group when launched by ``torchrun`` and pick this rank's device.

    Returns:
        ``(device, rank, world_size)``; ``(select_device(device), 0, 1)`` in a single process.
    """
    chosen = select_device(device)
    world_size = world_size_from_env()
    if world_size == 1:
        return chosen, 0, 1
    if not dist.is_initialized():
        backend = "nccl" if chosen.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
        logger.info("rank %d/%d joined the %s process group", dist.get_rank(), world_size, backend)
    if chosen.type == "cuda":
        chosen = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(chosen)
    return chosen, dist.get_rank(), dist.get_world_size()


def wrap_ddp(network: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``DistributedDataParallel(network)`` when a process group is active, else the network."""
    if not (dist.is_available() and dist.is_initialized()):
        return network
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(network, device_ids=ids)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
