"""Grid-parallel SAE training under ``torchrun``: the SAEs of a grid dealt out to the ranks.

Each rank trains its own SAEs (SAE ``i`` on rank ``i % world``) with the ordinary fused
trainer on the same batches, so each SAE ends exactly as it would trained alone; then each
SAE's tensors are broadcast from its owner so every rank returns the whole trained grid.
Checkpoints of a rank's part go to ``checkpoint_dir/part-R-of-W`` (resume with the same
number of processes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from hierlens.core import distributed as D

from .base import SAE


def owner(i: int, world: int) -> int:
    """The rank that trains SAE ``i`` of a grid on ``world`` processes."""
    return i % world


def train_grid_parallel(
    train_saes,
    saes: list[SAE],
    source,
    cfg,
    checkpoint_dir,
    resume,
    progress,
    callback,
    log_dir=None,
) -> tuple[int, list[dict[str, Any]]]:
    """Train each SAE of ``saes`` on the rank that owns it (``train_saes`` on its part), then
    broadcast every SAE's weights to all ranks. Returns the steps and the merged history of
    all ranks (``train_saes`` builds its result from them). Each rank's trackers
    (``cfg.log_to``) write under ``log_dir/part-R-of-W`` (its SAEs numbered within its part),
    as its checkpoints do."""
    r, w = D.rank(), D.world_size()
    mine = [i for i in range(len(saes)) if owner(i, w) == r]
    history: list[dict[str, Any]] = []
    steps = 0
    if mine:
        part_dir = None
        if checkpoint_dir is not None:
            part_dir = Path(checkpoint_dir) / f"part-{r}-of-{w}"
        part_log = Path(log_dir) / f"part-{r}-of-{w}" if log_dir is not None else None
        res = train_saes(
            [saes[i] for i in mine],
            source,
            config=cfg,
            checkpoint_dir=part_dir,
            resume=resume and part_dir is not None and part_dir.exists(),
            progress=progress and D.is_main(),
            callback=callback,
            log_dir=part_log,
        )
        steps = res.steps
        history = [dict(rec, sae=mine[rec["sae"]]) for rec in res.history]
    _broadcast_saes(saes, w)
    gathered: list[Any] = [None] * w
    dist.all_gather_object(gathered, (steps, history))
    steps = max(s for s, _ in gathered)
    history = sorted(
        (rec for _, h in gathered for rec in h), key=lambda rec: (rec["step"], rec["sae"])
    )
    return steps, history


@torch.no_grad()
def _broadcast_saes(saes: list[SAE], world: int) -> None:
    nccl = dist.get_backend() == "nccl"
    for i, sae in enumerate(saes):
        for t in [*sae.parameters(), *sae.buffers()]:
            buf = t.data.cuda() if nccl and not t.is_cuda else t.data
            dist.broadcast(buf, src=owner(i, world))
            if buf is not t.data:
                t.data.copy_(buf)
