"""The stacked program behind :func:`~hierlens.models.train_many.train_many`: parameters of
N models of one shape stacked on a leading model axis ``(N, *shape)``, their AdamW moments,
each model's batch of its own step, and one optimizer step for all of them (the stacked
forward, per-model gradient clipping with one norm per model, and the fused AdamW kernel once
per distinct learning rate and weight decay).

Two kinds of models stack:

- bridges around TL-native transformers: the forward is
  :func:`~hierlens.models.fused.fused_logits` on the stacked parameters (batched products,
  padding skipped, attention in length groups across the stack);
- the Chomsky-hierarchy architectures of :func:`~hierlens.models.architectures.build_model`
  (RNN, LSTM, Stack-RNN, Tape-RNN, the transformer encoder): the forward is the model's own
  ``forward`` under ``torch.func.vmap`` over the stacked parameters
  (``functional_call``), so each op of a time step runs once for all N models.

A *member* is any object with ``model``, ``params`` (:func:`stack_params`), ``optimizer``
(the model's own ``torch.optim.AdamW``, whose state a checkpoint saves), ``config``
(:class:`~hierlens.models.TrainConfig`), ``task``, ``step`` and ``data`` (a
:class:`~hierlens.models.train.BatchSampler`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .forward import compiled
from .fused import fused_logits, fused_spec, native_params
from .model_inputs import is_bidirectional
from .tasks.base import IGNORE_INDEX
from .train import BatchSampler
from .train_run import config_lr

__all__ = ["Stack", "attach_data", "stack_key", "stack_params"]


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
        config.amp,
        config.compile,
        unpad,
    )


def _stack_forward(members: list) -> Callable:
    """``forward(params, tokens, mask, keep) -> logits`` for stacked ``params`` and
    ``(N, B, T)`` batches: ``(N, n, vocab)`` at ``keep`` ``(N, n)``, else ``(N, B, T,
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
    """The stacked parameters ``(N, *shape)`` and AdamW moments of some members."""

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
        self.decay = [n for n, p in first.items() if p.dim() >= 2]
        self.no_decay = [n for n, p in first.items() if p.dim() < 2]
        with torch.no_grad():
            self.p = {n: torch.stack([m.params[n].detach() for m in members]) for n in first}
            self.m = {n: torch.zeros_like(t) for n, t in self.p.items()}
            self.v = {n: torch.zeros_like(t) for n, t in self.p.items()}
            for r, mem in enumerate(members):
                names = {id(p): n for n, p in mem.params.items()}
                for p, st in mem.optimizer.state.items():
                    self.m[names[id(p)]][r] = st["exp_avg"]
                    self.v[names[id(p)]][r] = st["exp_avg_sq"]
        for t in self.p.values():
            t.requires_grad_(True)
        steps = [float(m.step) for m in members]
        self.count = torch.tensor(steps, dtype=torch.float32, device=device)
        self.loss_sum = torch.zeros(len(members), device=device)
        self._cache_views()

    def _make_forward(self) -> None:
        self.forward = _stack_forward(self.members)
        if self.compile:
            self.forward = compiled(self.forward, self.device)

    def _cache_views(self) -> None:
        """Each row's views of the parameters, moments and step count for the AdamW kernel:
        ``views[r][decay]`` with ``decay`` True for matrices, False for the rest."""
        with torch.no_grad():
            self.views = self._row_views()

    def _row_views(self) -> list[dict]:
        return [
            {
                decay: (
                    [self.p[n][r] for n in names],
                    [self.m[n][r] for n in names],
                    [self.v[n][r] for n in names],
                    [self.count[r]] * len(names),
                )
                for decay, names in ((True, self.decay), (False, self.no_decay))
            }
            for r in range(len(self.members))
        ]

    def write_back(self, r: int) -> None:
        """Copy member ``r``'s weights into its model and its moments into its optimizer
        (the state a ``train`` checkpoint holds)."""
        mem = self.members[r]
        with torch.no_grad():
            for n, p in mem.params.items():
                p.copy_(self.p[n][r])
        names = {id(p): n for n, p in mem.params.items()}
        for group in mem.optimizer.param_groups:
            group["lr"] = config_lr(mem.config, max(mem.step - 1, 0))
            for p in group["params"]:
                n = names[id(p)]
                mem.optimizer.state[p] = {
                    "step": self.count[r].clone(),
                    "exp_avg": self.m[n][r].clone(),
                    "exp_avg_sq": self.v[n][r].clone(),
                }

    def remove(self, rows: list[int]) -> None:
        """Take members ``rows`` out of the stack."""
        keep = [r for r in range(len(self.members)) if r not in rows]
        self.members = [self.members[r] for r in keep]
        idx = torch.tensor(keep, dtype=torch.long, device=self.device)
        with torch.no_grad():
            self.p = {n: t.index_select(0, idx).requires_grad_(True) for n, t in self.p.items()}
            self.m = {n: t.index_select(0, idx) for n, t in self.m.items()}
            self.v = {n: t.index_select(0, idx) for n, t in self.v.items()}
            self.count = self.count.index_select(0, idx)
            self.loss_sum = self.loss_sum.index_select(0, idx)
        if self.members:
            self._make_forward()
        self._cache_views()

    def _batch(self):
        """Every member's batch of its current step, stacked: tokens, targets and mask
        ``(N, B, T)``, ``keep`` ``(N, n)`` or ``None``, and each member's real tokens."""
        mems = self.members
        rows = [m.data.rows(m.step) for m in mems]
        lengths = np.stack([m.data.lengths[r] for m, r in zip(mems, rows, strict=True)])
        m = self.width_multiple
        width = min(-(-int(lengths.max()) // m) * m, mems[0].data.tokens.shape[1])
        real = np.arange(width)[None, None, :] < lengths[:, :, None]  # (N, B, T)
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

    def step(self, amp: bool) -> list[int]:
        """One optimizer step of every member (each at its own step); accumulates the losses
        in ``loss_sum`` and returns each member's real tokens."""
        tokens, targets, mask, keep, n_tokens = self._batch()
        n = len(self.members)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp):
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
        names = list(self.p)
        # the fused AdamW kernel walks memory in order: gradients in the parameters' layout
        raw = torch.autograd.grad(losses.sum(), [self.p[k] for k in names])
        grads = {k: g.contiguous() for k, g in zip(names, raw, strict=True)}
        with torch.no_grad():
            self._clip(grads)
            self._adamw(grads)
            self.loss_sum += losses.detach()
        return n_tokens

    def _clip(self, grads: dict[str, torch.Tensor]) -> None:
        """Each member's gradients scaled to its ``grad_clip`` global norm (as
        ``clip_grad_norm_``), one norm per member."""
        clips = [m.config.grad_clip for m in self.members]
        if all(c is None for c in clips):
            return
        n = len(clips)
        norms = torch.stack(
            [torch.linalg.vector_norm(g.reshape(n, -1), dim=1) for g in grads.values()]
        )
        total = torch.linalg.vector_norm(norms, dim=0)
        limit = torch.tensor([c or 1.0 for c in clips], device=self.device)
        coef = (limit / (total + 1e-6)).clamp(max=1.0)
        off = torch.tensor([c is None for c in clips], device=self.device)
        coef = torch.where(off, torch.ones_like(coef), coef)
        for g in grads.values():
            g.mul_(coef.view(n, *([1] * (g.dim() - 1))))

    def _adamw(self, grads: dict[str, torch.Tensor]) -> None:
        """AdamW (decoupled weight decay on matrices only, as :func:`make_optimizer`) with
        each member's learning rate at its step: one fused kernel per (lr, decay, betas)."""
        self.count += 1
        groups: dict[tuple, list[int]] = {}
        for r, mem in enumerate(self.members):
            c = mem.config
            key = (config_lr(c, mem.step), c.weight_decay, tuple(c.betas))
            groups.setdefault(key, []).append(r)
        for (lr, wd, (b1, b2)), rows in groups.items():
            for decay, names in ((True, self.decay), (False, self.no_decay)):
                if not names:
                    continue
                lists: tuple[list, ...] = ([], [], [], [], [])
                for r in rows:
                    p, m, v, count = self.views[r][decay]
                    for out, part in zip(lists, (p, [grads[n][r] for n in names], m, v, count)):
                        out.extend(part)
                torch._fused_adamw_(
                    lists[0],
                    lists[1],
                    lists[2],
                    lists[3],
                    [],
                    lists[4],
                    lr=lr,
                    beta1=b1,
                    beta2=b2,
                    weight_decay=wd if decay else 0.0,
                    eps=1e-8,
                    amsgrad=False,
                    maximize=False,
                )


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
