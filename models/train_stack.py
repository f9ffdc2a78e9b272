"""The stacked program behind :func:`~hierlens.models.train_many.train_many`: parameters of
S models of one shape stacked on a leading member axis ``(S, *shape)``, each model's batch
of its own step, and one training step for all of them (the stacked forward and backward,
then the one optimizer step of :class:`hierlens.core.optim.StackedAdamW`: per-model gradient
clipping with one norm per model, and AdamW with each model's learning rate at its step).

Two kinds of models stack:

- bridges around TL-native transformers: the forward is
  :func:`~hierlens.models.fused.fused_logits` on the stacked parameters (batched products,
  padding skipped, attention in length groups across the stack);
- the Chomsky-hierarchy architectures of :func:`~hierlens.models.architectures.build_model`
  (RNN, LSTM, Stack-RNN, Tape-RNN, the transformer encoder): the forward is the model's own
  ``forward`` under ``torch.func.vmap`` over the stacked parameters
  (``functional_call``), so each op of a time step runs once for all S models.

A *member* is a :class:`~hierlens.models.train_loop.Member`: ``model``, ``params``
(:func:`stack_params`), ``config`` (:class:`~hierlens.models.TrainConfig`), ``task``,
``step``, ``opt_state`` (the optimizer state its checkpoint held) and ``data`` (a
:class:`~hierlens.models.batches.BatchSampler`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from hierlens.core.optim import StackedAdamW

from .batches import BatchSampler
from .forward import compiled
from .fused import fused_logits, fused_spec, native_params
from .model_inputs import is_bidirectional
from .tasks.base import IGNORE_INDEX
from .train_run import config_lr

__all__ = ["Stack", "attach_data", "model_optimizer", "stack_key", "stack_params"]


def _vmappable(model: torch.nn.Module) -> bool:
    """A model of :func:`~hierlens.models.architectures.build_model`: its forward is a pure
    function of its parameters and buffers (no dropout, no running statistics)."""
    from .architectures import ArchConfig

    return isinstance(getattr(model, "hierlens_config", None), ArchConfig)


def stack_params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``{name: parameter}`` a stack trains: the native names of a TL-native bridge, the
    module's own names otherwise (trainable parameters only)."""
    if fused_spec(model) is not None:
        return native_params(model)
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def stack_key(model: torch.nn.Module, config, device: torch.device) -> tuple | None:
    """Models with equal keys train in one stack (``None``: the model cannot be stacked):
    the architecture (the fused spec, or the config apart from its seed), every parameter's
    and buffer's name and shape, the batch size, the device, and the autocast, compile and
    unpadding settings (padding is skipped for TL-native stacks on the CPU, as ``train``
    does)."""
    spec = fused_spec(model)
    if spec is not None:
        arch: object = spec
        auto = device.type == "cpu" and not config.compile  # as train()
        unpad = config.unpad if config.unpad is not None else auto
    elif _vmappable(model):
        arch = (type(model).__name__, model.hierlens_config.replace(seed=0))
        unpad = False
    else:
        return None
    shapes = tuple((n, tuple(p.shape)) for n, p in stack_params(model).items())
    buffers = tuple((n, tuple(b.shape)) for n, b in model.named_buffers())
    return (
        arch,
        shapes,
        buffers,
        config.batch_size,
        str(device),
        config.autocast,
        config.compile,
        unpad,
    )


def model_optimizer(
    params: dict[str, torch.Tensor], configs: list, *, stacked: bool = True
) -> StackedAdamW:
    """The optimizer of models with :class:`~hierlens.models.TrainConfig` s ``configs``
    over ``params`` (``{parameter name: tensor}``, ``(S, *shape)`` when ``stacked``, else one
    model's own parameters): AdamW with each model's betas, weight decay on matrices only,
    and gradient clipping."""
    extra = 1 if stacked else 0
    return StackedAdamW(
        params,
        stacked=stacked,
        betas=[tuple(c.betas) for c in configs],
        weight_decay=[c.weight_decay for c in configs],
        grad_clip=[c.grad_clip for c in configs],
        decay={n for n, t in params.items() if t.dim() - extra >= 2},
    )


def _stack_forward(members: list) -> Callable:
    """``forward(params, tokens, mask, keep) -> logits`` for stacked ``params`` and
    ``(S, B, T)`` batches: ``(S, n, vocab)`` at ``keep`` ``(S, n)``, else ``(S, B, T,
    vocab)``."""
    model = members[0].model
    spec = fused_spec(model)
    if spec is not None:

        def fused(p, tokens, mask, keep):
            if tokens.shape[0] == 1:  # one model: the single-model layout (grouped attention)
                alone = {n: t[0] for n, t in p.items()}
                one_keep = None if keep is None else keep[0]
                return fused_logits(spec, alone, tokens[0], mask[0], one_keep)[None]
            return fused_logits(spec, p, tokens, mask, keep)

        return fused
    buffers = {
        n: torch.stack([m.model.get_buffer(n) for m in members]) for n, _ in model.named_buffers()
    }
    masked = is_bidirectional(model)

    def one(params, bufs, tokens, mask):
        kwargs = {"attention_mask": mask.long()} if masked else {}
        out = torch.func.functional_call(model, (params, bufs), (tokens,), kwargs)
        return out.logits if hasattr(out, "logits") else out

    batched = torch.func.vmap(one)

    def forward(p, tokens, mask, keep):
        if keep is not None:
            raise ValueError("a stack of plain modules runs padded batches (keep=None)")
        if tokens.shape[0] == 1:  # one model: its forward alone (vmap costs time per op)
            first = {n: t[0] for n, t in p.items()}
            return one(first, {n: b[0] for n, b in buffers.items()}, tokens[0], mask[0])[None]
        return batched(p, buffers, tokens, mask)

    return forward


class Stack:
    """The stacked parameters ``(S, *shape)`` of some members and their optimizer."""

    def __init__(
        self, members: list, device: torch.device, unpad: bool, compile: bool = False
    ) -> None:
        self.members = members
        self.device = device
        self.unpad = unpad
        self.compile = compile
        # CUDA graphs replay fixed shapes: batch widths rounded up to few distinct ones
        self.width_multiple = 8 if compile and device.type == "cuda" else 1
        self.spec = fused_spec(members[0].model)  # None for a stack of plain modules
        self._make_forward()
        first = members[0].params
        # the optimizer keys its state by the modules' parameter names (what train() saves)
        own = {id(p): n for n, p in members[0].model.named_parameters()}
        self.module_names = {n: own[id(p)] for n, p in first.items()}
        with torch.no_grad():
            self.p = {n: torch.stack([m.params[n].detach() for m in members]) for n in first}
        for t in self.p.values():
            t.requires_grad_(True)
        self.optimizer = model_optimizer(self._by_module_name(), [m.config for m in members])
        for r, mem in enumerate(members):
            mem.restore_optimizer(self.optimizer, rows=[r])
        self.loss_sum = torch.zeros(len(members), device=device)

    def _by_module_name(self) -> dict[str, torch.Tensor]:
        return {self.module_names[n]: t for n, t in self.p.items()}

    def _make_forward(self) -> None:
        self.forward = _stack_forward(self.members)
        if self.compile:
            self.forward = compiled(self.forward, self.device)

    def losses(self) -> list[float]:
        """Each member's training losses summed since its last record (a host sync)."""
        return self.loss_sum.tolist()

    def write_back(self, r: int) -> None:
        """Copy member ``r``'s weights into its model."""
        mem = self.members[r]
        with torch.no_grad():
            for n, p in mem.params.items():
                p.copy_(self.p[n][r])

    def optimizer_state(self, r: int) -> dict[str, torch.Tensor]:
        """Member ``r``'s optimizer state, as its checkpoint holds it."""
        return self.optimizer.state_dict(rows=[r])

    def remove(self, rows: list[int]) -> None:
        """Take members ``rows`` out of the stack."""
        keep = [r for r in range(len(self.members)) if r not in rows]
        self.members = [self.members[r] for r in keep]
        idx = torch.tensor(keep, dtype=torch.long, device=self.device)
        with torch.no_grad():
            self.p = {n: t.index_select(0, idx).requires_grad_(True) for n, t in self.p.items()}
            self.loss_sum = self.loss_sum.index_select(0, idx)
        self.optimizer.keep(keep, self._by_module_name())
        if self.members:
            self._make_forward()

    def _batch(self):
        """Every member's batch of its current step, stacked: tokens, targets and mask
        ``(S, B, T)``, ``keep`` ``(S, n)`` or ``None``, and each member's real tokens."""
        mems = self.members
        rows = [m.data.rows(m.step) for m in mems]
        lengths = np.stack([m.data.lengths[r] for m, r in zip(mems, rows, strict=True)])
        m = self.width_multiple
        width = min(-(-int(lengths.max()) // m) * m, mems[0].data.tokens.shape[1])
        real = np.arange(width)[None, None, :] < lengths[:, :, None]  # (S, B, T)
        idx = torch.from_numpy(np.stack(rows)).to(self.device)
        tokens = torch.stack([m.data.tokens[idx[i], :width] for i, m in enumerate(mems)])
        targets = torch.stack([m.data.targets[idx[i], :width] for i, m in enumerate(mems)])
        keep = None
        if self.unpad:
            flat = real.reshape(len(mems), -1)
            order = np.argsort(~flat, axis=1, kind="stable")[:, : int(flat.sum(1).max())]
            keep = torch.from_numpy(order).to(self.device)
        mask = torch.from_numpy(real).to(self.device)
        return tokens, targets, mask, keep, lengths.sum(1).tolist()

    def step(self, autocast: bool) -> list[int]:
        """One training step of every member (each at its own step): the stacked forward and
        backward, then the optimizer step; accumulates the losses in ``loss_sum`` and
        returns each member's real tokens."""
        tokens, targets, mask, keep, n_tokens = self._batch()
        n = len(self.members)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = self.forward(self.p, tokens, mask, keep)
        targets = targets.reshape(n, -1)
        if keep is not None:
            targets = targets.gather(1, keep)
        per = F.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]),
            targets.reshape(-1),
            ignore_index=IGNORE_INDEX,
            reduction="none",
        ).view(n, -1)
        losses = per.sum(1) / (targets != IGNORE_INDEX).sum(1)
        losses.sum().backward()
        self.optimizer.step([config_lr(m.config, m.step) for m in self.members])
        self.optimizer.zero_grad()
        with torch.no_grad():
            self.loss_sum += losses.detach()
        return n_tokens


def attach_data(members: list, device: torch.device) -> None:
    """One :class:`BatchSampler` per distinct (task, data seed, pool, batch size, loss) —
    models that agree share their training pool and batches — with every pool padded to
    the widest so that any step's batches stack."""
    samplers: list[tuple[tuple, BatchSampler]] = []
    for m in members:
        c = m.config
        key = (m.task, c.seed, c.train_pool, c.batch_size, c.loss_on)
        for k, s in samplers:
            if k == key:
                m.data = s
                break
        else:
            m.data = BatchSampler(m.task, c, device)
            samplers.append((key, m.data))
    width = max(s.tokens.shape[1] for _, s in samplers)
    for (task, *_), s in samplers:
        extra = width - s.tokens.shape[1]
        if extra:
            s.tokens = F.pad(s.tokens, (0, extra), value=task.pad_id)
            s.targets = F.pad(s.targets, (0, extra), value=IGNORE_INDEX)
