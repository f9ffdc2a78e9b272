"""Process-group helpers for running under ``torchrun`` (one job on many processes).

hierlens never starts processes itself: ``torchrun --nproc_per_node N`` (or a SLURM
``srun`` launching it on every node) starts them and sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``. :func:`init_from_env` joins the
process group those variables describe (NCCL with CUDA, gloo otherwise); outside
``torchrun`` it does nothing and every helper answers as for a single process, so the same
code runs unchanged in one process.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.distributed as dist

__all__ = [
    "barrier",
    "init_from_env",
    "is_distributed",
    "is_main",
    "local_device",
    "rank",
    "shard_range",
    "world_size",
]


def launched() -> bool:
    """True when the environment describes a process group (``torchrun`` sets these)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ


def init_from_env(device: str | torch.device | None = None) -> bool:
    """Join the process group described by the environment (once); returns whether this
    process is part of a group of more than one. NCCL when ``device`` is (or defaults to)
    CUDA, gloo otherwise; each process uses GPU ``LOCAL_RANK``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    if not (dist.is_available() and launched()):
        return False
    cuda = torch.cuda.is_available() if device is None else torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if cuda else "gloo")
    return dist.get_world_size() > 1


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Rank 0 (or the only process): the one that writes shared files and logs."""
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def local_device(device: torch.device) -> torch.device:
    """``device`` with this process's GPU index (``LOCAL_RANK``) when it is CUDA."""
    if device.type == "cuda" and device.index is None and is_distributed():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


def shard_range(n: int, r: int | None = None, w: int | None = None) -> tuple[int, int]:
    """The contiguous slice ``[start, end)`` of ``n`` items owned by rank ``r`` of ``w``
    (the first ``n % w`` ranks get one more)."""
    r = rank() if r is None else r
    w = world_size() if w is None else w
    base, extra = divmod(n, w)
    start = r * base + min(r, extra)
    return start, start + base + (1 if r < extra else 0)


def all_reduce_sum(tensors: Sequence[torch.Tensor]) -> None:
    """Sum ``tensors`` in place over all ranks (one flattened collective; no-op alone)."""
    tensors = [t for t in tensors if t is not None]
    if not is_distributed() or not tensors:
        return
    flat = torch.cat([t.reshape(-1).to(torch.float64) for t in tensors])
    dist.all_reduce(flat)
    i = 0
    for t in tensors:
        t.copy_(flat[i : i + t.numel()].view_as(t).to(t.dtype))
        i += t.numel()
