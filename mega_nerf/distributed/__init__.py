"""torch.distributed set-up shared by every multi-process stage (gloo on CPU, NCCL on CUDA).

A stage launched by ``torch.distributed.run`` finds ``RANK``/``WORLD_SIZE`` in its environment;
a stage launched plainly runs as rank 0 of 1 with no process group.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, List

import torch
import torch.distributed as dist


@dataclass
class ProcessInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_from_env(device: str | None = None) -> ProcessInfo:
    """Join the process group described by torchrun's environment, if any.

    Uses NCCL when this process drives a CUDA device, gloo otherwise.  Each rank gets the GPU
    ``LOCAL_RANK`` when CUDA is available.
    """
    if "RANK" not in os.environ or dist.is_initialized():
        if dist.is_initialized():
            return ProcessInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
        return ProcessInfo()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = torch.cuda.is_available() and (device is None or device.startswith("cuda"))
    if use_cuda:
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(hours=24))
    return ProcessInfo(rank, world, local_rank)


def default_device(requested: str | None, info: ProcessInfo) -> torch.device:
    if requested is not None:
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda", info.local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def process_device(requested: str | None) -> torch.device:
    """The device this process computes on: ``requested``, else its current CUDA device (the rank's
    GPU once :func:`init_from_env` has run), else the CPU.  Unlike :func:`default_device` it needs no
    :class:`ProcessInfo`, so library code never falls back to GPU 0 on every rank."""
    if requested is not None:
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def free_memory_bytes(device: torch.device) -> int | None:
    """Bytes free on ``device`` now: CUDA's free memory, else the host's free RAM (POSIX); None
    where the system does not say."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a CPU tensor over ranks (works for both gloo and NCCL)."""
    if not dist.is_initialized():
        return t
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else t.device
    moved = t.to(device)
    dist.all_reduce(moved)
    return moved.to(t.device)


def gather_objects(obj: Any) -> List[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not dist.is_initialized():
        return [obj]
    out: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
