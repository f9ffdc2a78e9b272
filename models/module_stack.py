"""A stack of one model trained on the module's own parameters: what
:func:`~hierlens.models.train` runs through the stacked trainer's loop
(:mod:`.train_loop`).

It has the interface of :class:`~hierlens.models.train_stack.Stack` (``members``,
``step``, ``losses``, ``write_back``, ``optimizer_state``, ``remove``) but keeps no stacked
copy: the optimizer (:class:`hierlens.core.optim.StackedAdamW` over one member, without a
member axis) updates the module's parameters in place, so any module that maps ``(B, T)``
tokens to logits trains, its dropout draws from torch's global RNG, the model is current
after every step (for callbacks), and under ``torchrun`` the forward runs in
``DistributedDataParallel``, each rank on its shard of the global batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from hierlens.core import distributed as D

from .batches import BatchSampler
from .forward import compiled, training_forward
from .tasks.base import IGNORE_INDEX
from .train_run import config_lr
from .train_stack import model_optimizer

__all__ = ["ModuleStack"]


class _TrainingModule(torch.nn.Module):
    """The training forward as a module over ``model``'s parameters, so that
    DistributedDataParallel can wrap it (the hook-free forward calls the parameters through
    ``functional_call``; DDP only needs them registered and reached by autograd)."""

    def __init__(self, model: torch.nn.Module, forward: Callable) -> None:
        super().__init__()
        self.model = model
        self.fn = forward

    def forward(
        self, tokens: torch.Tensor, mask: torch.Tensor | None, keep: torch.Tensor | None
    ) -> torch.Tensor:
        return self.fn(tokens, mask, keep)


class ModuleStack:
    """One member (a :class:`~hierlens.models.train_loop.Member`) trained on its model's
    own parameters; ``distributed``: this process is one rank of a ``torchrun`` group."""

    spec = None  # evaluated through the task, never as a fused stack

    def __init__(self, member, device: torch.device, distributed: bool) -> None:
        config = member.config
        self.members = [member]
        self.device = device
        self.distributed = distributed
        self.world = D.world_size()
        auto = device.type == "cpu" and not config.compile
        member.data = BatchSampler(
            member.task,
            config,
            device,
            unpad=config.unpad if config.unpad is not None else auto,
            width_multiple=8 if (config.compile and device.type == "cuda") else 1,
        )
        model = member.model
        forward = training_forward(model)
        if config.compile:
            forward = compiled(forward, device)
        if distributed:
            from torch.nn.parallel import DistributedDataParallel

            forward = DistributedDataParallel(
                _TrainingModule(model, forward),
                device_ids=[device.index] if device.type == "cuda" else None,
            )
        self.forward = forward
        params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.optimizer = model_optimizer(params, [config], stacked=False)
        member.restore_optimizer(self.optimizer)
        self.loss_sum = torch.zeros(1, device=device)

    def step(self, autocast: bool) -> list[int]:
        """One training step: forward, backward (gradients averaged over the ranks by DDP),
        the optimizer step; accumulates the loss in ``loss_sum`` and returns the real tokens
        of the (global) batch."""
        m = self.members[0]
        if self.distributed:
            batch, n_targets = m.data.shard(m.step, D.rank(), self.world)
        else:
            batch = m.data(m.step)
        targets = batch.targets.reshape(-1)
        if batch.keep is not None:
            targets = targets[batch.keep]
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = self.forward(batch.tokens, batch.mask, batch.keep)
        flat = logits.float().reshape(-1, logits.shape[-1])
        if self.distributed:
            # DDP averages gradients over ranks: scale this rank's summed loss so the
            # average is the mean over the global batch's trained positions.
            loss = F.cross_entropy(flat, targets, ignore_index=IGNORE_INDEX, reduction="sum")
            loss = loss * (self.world / max(n_targets, 1))
        else:
            loss = F.cross_entropy(flat, targets, ignore_index=IGNORE_INDEX)
        loss.backward()
        self.optimizer.step(config_lr(m.config, m.step))
        self.optimizer.zero_grad()
        self.loss_sum += loss.detach()
        return [batch.n_tokens]

    def losses(self) -> list[float]:
        """The training loss summed since the last record, averaged over the ranks (a host
        sync; under ``torchrun`` a collective every rank makes at the same steps)."""
        if not self.distributed:
            return self.loss_sum.tolist()
        total = self.loss_sum.clone()
        D.all_reduce_sum([total])
        return (total / self.world).tolist()

    def write_back(self, r: int) -> None:
        """Nothing to copy: the model's parameters are the trained ones."""

    def optimizer_state(self, r: int) -> dict[str, torch.Tensor]:
        """The optimizer state, as a checkpoint holds it."""
        return self.optimizer.state_dict()

    def remove(self, rows: list[int]) -> None:
        """The member leaves: the stack is empty."""
        self.members = []
