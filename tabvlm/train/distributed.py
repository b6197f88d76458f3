"""Where a training process runs: its device, its rank among torchrun's processes, the collective
operations the Trainer needs (nothing happens for a single process)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist

from tabvlm.errors import ConfigError


def cpu_has_bf16() -> bool:
    """Whether this CPU has native bf16 dot products (avx512_bf16 or amx_bf16), from /proc/cpuinfo."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """A TrainConfig's `device` as a torch.device (auto: cuda:local_rank when a GPU is visible,
    else cpu; cuda without an index: cuda:local_rank); one that this machine lacks is a ConfigError."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device: expected auto, cpu, cuda, cuda:N or mps, found {name!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device: expected a visible GPU for {name!r}, found none (torch.cuda.is_available() is "
                "False); use device=cpu or auto"
            )
        index = local_rank if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"device: expected cuda:0 to cuda:{torch.cuda.device_count() - 1}, found {name!r} "
                f"(local rank {local_rank})"
            )
        return torch.device("cuda", index)
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device: expected an available mps device for {name!r}, found none")
    return device


def dist_env() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment (1 process without it)."""
    return (
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("WORLD_SIZE", 1)),
        int(os.environ.get("LOCAL_RANK", 0)),
    )


def init_process_group(world_size: int, device: torch.device) -> None:
    """Join torchrun's process group (nccl on GPU, gloo on CPU) when there is more than one process."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def barrier(world_size: int) -> None:
    if world_size > 1:
        dist.barrier()


def all_sum(values: list[float], world_size: int, device: torch.device) -> list[float]:
    """`values` summed over every process (as they are for one)."""
    if world_size == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()
