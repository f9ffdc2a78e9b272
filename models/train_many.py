"""Many small transformers trained as one program: models of one shape share a stack.

:func:`train_many` trains N TL-native transformers. Models whose architectures share a shape
(layers, widths, heads, context, vocabulary, norms, positions) and batch size form one stack:
their parameters are stacked on a leading model axis, one forward/backward per step
(:func:`~hierlens.models.fused.fused_logits` on the stacked parameters, batched products)
computes every model of the stack on its own batch, and AdamW runs as one fused kernel per
distinct (learning rate, weight decay) over the stack's rows. Seeds, learning rates, weight
decays, schedules, step counts, clipping and data seeds may differ between the models of a
stack. Models of other shapes go into other stacks, trained in the same loop.

Models never interact: each loss is its own mean, gradient clipping is per model (one norm
per model), and AdamW is elementwise, so each model follows the trajectory
:func:`~hierlens.models.train` gives it alone (up to float rounding; tested to 1e-5). On the
CPU a stack skips padding as ``train`` does: each model's real tokens are packed, padded only
to the largest count among the stack's models.

Each run directory gets exactly what ``train`` writes: ``config.json``, the same
``metrics.jsonl`` records at the same steps, checkpoints at the same steps that ``train``
resumes from. Each model resumes from its own newest valid checkpoint, as ``train`` would
(models at different steps share a stack). A model that reaches its last step leaves its
stack; a model whose loss turns non-finite is reported, leaves its stack (keeping the weights
of its last evaluation or checkpoint) and the others go on.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .atomic_io import append_jsonl
from .checkpoint import save_checkpoint
from .device import resolve_device
from .fused import fused_logits, fused_spec, native_params
from .run import Run, latest_valid_checkpoint, run_config_dict
from .tasks.base import IGNORE_INDEX, Task
from .train import BatchSampler, TrainResult, make_optimizer
from .train_config import TrainConfig
from .train_run import (
    check_training_inputs,
    config_lr,
    eval_sets,
    open_tracker,
    prepare_run_dir,
    train_record,
    truncate_metrics,
    write_evaluation,
)
from .transformer import ModelConfig

__all__ = ["train_many"]

log = logging.getLogger(__name__)


class _Member:
    """One model of a stack: its run, step, data, schedule and what it has reported."""

    def __init__(self, index, model, task, config, model_config, run, device, resume):
        self.index, self.model, self.task, self.config = index, model, task, config
        self.model_config, self.run = model_config, run
        self.params = native_params(model)
        self.optimizer = make_optimizer(model, config, device)
        self.step = 0
        if resume:
            ckpt = latest_valid_checkpoint(run.path, map_location=device)
            if ckpt is not None:
                model.load_state_dict(ckpt.model_state)
                if ckpt.optimizer_state is not None:
                    self.optimizer.load_state_dict(ckpt.optimizer_state)
                self.step = ckpt.step
                log.info("resuming %s from step %d", run.path, self.step)
        truncate_metrics(run, self.step)
        self.eval_steps = set(config.eval_steps)
        self.ckpt_steps = set(config.checkpoint_steps)
        self.evaluated = eval_sets(task, config) if self.step < config.steps else {}
        self.tracker = open_tracker(run, task, model_config, config, resume, self.step)
        self.data: BatchSampler | None = None
        self.last_loss: float | None = None
        self.last_eval: dict[str, dict[str, float]] = {}
        self.stopped: str | None = None
        self.n_loss = 0
        self.tokens = 0
        self.t_last = time.perf_counter()

    def evaluate(self, device: torch.device) -> None:
        for split, examples in self.evaluated.items():
            self.last_eval[split] = self.task.evaluate(
                self.model, split, examples=examples, device=device
            )
        write_evaluation(self.run, self.tracker, self.step, self.last_eval)

    def checkpoint(self) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed)  # the RNG state train() saves: nothing draws
            save_checkpoint(
                self.run.checkpoint_dir(self.step),
                self.step,
                self.model,
                self.optimizer,
                extra={"train_loss": self.last_loss},
            )


class _Stack:
    """The stacked parameters ``(N, *shape)`` and AdamW moments of some members."""

    def __init__(self, members: list[_Member], device: torch.device, unpad: bool) -> None:
        self.members = members
        self.device = device
        self.unpad = unpad
        self.spec = fused_spec(members[0].model)
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
        self._cache_views()

    def _batch(self):
        """Every member's batch of its current step, stacked: tokens, targets and mask
        ``(N, B, T)``, ``keep`` ``(N, n)`` or ``None``, and each member's real tokens."""
        mems = self.members
        rows = [m.data.rows(m.step) for m in mems]
        lengths = np.stack([m.data.lengths[r] for m, r in zip(mems, rows, strict=True)])
        width = int(lengths.max())
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
            logits = fused_logits(self.spec, self.p, tokens, mask, keep)
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


def _as_list(value, n: int, what: str) -> list:
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"train_many: {n} models but {len(value)} {what}")
        return list(value)
    return [value] * n


def _stack_key(model: torch.nn.Module, config: TrainConfig, device: torch.device) -> tuple:
    """Models with equal keys train in one stack: the fused spec, every parameter's name and
    shape, the batch size, the device and the autocast and unpadding settings."""
    shapes = tuple((n, tuple(p.shape)) for n, p in native_params(model).items())
    unpad = config.unpad if config.unpad is not None else device.type == "cpu"
    return (fused_spec(model), shapes, config.batch_size, str(device), config.amp, unpad)


def train_many(
    models: Sequence[torch.nn.Module],
    tasks: Task | Sequence[Task],
    configs: TrainConfig | Sequence[TrainConfig],
    run_dirs: Sequence[str | os.PathLike],
    *,
    model_configs: ModelConfig | Sequence[ModelConfig | None] | None = None,
    resume: bool = True,
    overwrite: bool = False,
    progress: bool = True,
    stop_at: int | None = None,
    callback: Callable[[int], None] | None = None,
) -> list[TrainResult]:
    """Train ``models`` (bridges around TL-native transformers, e.g. from
    :func:`~hierlens.models.build_transformer`) in stacks of one shape, one run directory each.

    ``tasks`` and ``configs`` are one for all or one per model; ``model_configs`` defaults to
    each model's own. Each run directory ends as :func:`~hierlens.models.train` would write it
    (``resume``, ``overwrite`` and ``stop_at`` as there, per model; ``callback`` gets the
    furthest model's step after every fused step). Returns one :class:`TrainResult` per model;
    ``stopped`` says why a model left early (``"diverged at step S"``). Holds every run
    directory's lock. ``TrainConfig.compile`` is not used: stacks run eagerly.
    """
    models = list(models)
    n = len(models)
    if n == 0:
        raise ValueError("train_many needs at least one model")
    tasks, configs = _as_list(tasks, n, "tasks"), _as_list(configs, n, "configs")
    mcfgs = _as_list(model_configs, n, "model_configs")
    run_dirs = list(run_dirs)
    if len(run_dirs) != n:
        raise ValueError(f"train_many: {n} models but {len(run_dirs)} run_dirs")
    if len({os.path.realpath(d) for d in run_dirs}) != n:
        raise ValueError("train_many: two models share a run directory")
    for i, model in enumerate(models):
        if fused_spec(model) is None:
            raise TypeError(
                f"models[{i}] ({type(model).__name__}) is not a TL-native transformer the fused "
                "forward computes (see hierlens.models.fused); train it with train()"
            )
        mcfgs[i] = check_training_inputs(model, tasks[i], configs[i], mcfgs[i], f"models[{i}]: ")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("train_many runs in one process; launch train() under torchrun")
    devices = [resolve_device(c.device) for c in configs]
    groups: dict[tuple, list[int]] = {}
    for i in range(n):
        groups.setdefault(_stack_key(models[i], configs[i], devices[i]), []).append(i)
    log.info("train_many: %d model(s) in %d stack(s)", n, len(groups))

    with contextlib.ExitStack() as locks:
        runs = [locks.enter_context(Run(d).lock()) for d in run_dirs]
        for run, task, mcfg, cfg in zip(runs, tasks, mcfgs, configs, strict=True):
            prepare_run_dir(run, run_config_dict(task, mcfg, cfg), resume, overwrite)
        members = []
        for i in range(n):
            models[i].to(devices[i])
            members.append(
                _Member(i, models[i], tasks[i], configs[i], mcfgs[i], runs[i], devices[i], resume)
            )
        try:
            _train(members, groups, devices, progress, stop_at, callback)
        finally:
            for m in members:
                m.tracker.close()
    out = []
    for m in members:
        m.model.eval()
        out.append(TrainResult(m.run.path, m.step, m.last_loss, m.last_eval, stopped=m.stopped))
    return out


def _attach_data(members: list[_Member], device: torch.device) -> None:
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


def _train(members, groups, devices, progress, stop_at, callback) -> None:
    stacks = []
    for idxs in groups.values():
        mems = [members[i] for i in idxs]
        device = devices[idxs[0]]
        for m in mems:
            if m.step == 0:
                torch.manual_seed(m.config.seed)  # as train(): nothing draws from it
                if 0 in m.eval_steps:
                    m.evaluate(device)
        active = [m for m in mems if m.step < m.config.steps]
        if not active:
            continue
        _attach_data(active, device)
        unpad = _stack_key(active[0].model, active[0].config, device)[-1]
        stacks.append(_Stack(active, device, unpad))
    total = max((m.config.steps - m.step for s in stacks for m in s.members), default=0)
    bar = tqdm(total=total, disable=not progress, desc="train_many", leave=False)
    try:
        while any(s.members for s in stacks):
            for stack in stacks:
                if stack.members:
                    _advance(stack, stop_at)
            bar.update(1)
            if callback is not None:
                callback(max(m.step for m in members))
    finally:
        bar.close()


def _advance(stack: _Stack, stop_at: int | None) -> None:
    """One fused step of ``stack``, then each member's records, evaluation, checkpoint, and
    leaving the stack when it finished, diverged or reached ``stop_at``."""
    amp = stack.members[0].config.amp and stack.device.type == "cuda"
    n_tokens = stack.step(amp)
    due = []
    for r, m in enumerate(stack.members):
        m.step += 1
        m.n_loss += 1
        m.tokens += n_tokens[r]
        c, s = m.config, m.step
        if (
            s % c.log_every == 0
            or s >= c.steps
            or s in m.eval_steps
            or s in m.ckpt_steps
            or (stop_at is not None and s >= stop_at)
        ):
            due.append(r)
    if not due:
        return
    sums = stack.loss_sum.tolist()  # the only host sync: at records, evaluations, checkpoints
    leaving = []
    for r in due:
        m = stack.members[r]
        c, s = m.config, m.step
        if not math.isfinite(sums[r]):
            m.stopped = f"diverged at step {s}"
            log.warning(
                "%s: training loss is %s by step %d; the model leaves the stack, keeping the "
                "weights of its last evaluation or checkpoint",
                m.run.path,
                sums[r],
                s,
            )
            leaving.append(r)
            continue
        if s % c.log_every == 0 or s >= c.steps:
            now = time.perf_counter()
            m.last_loss = sums[r] / m.n_loss
            record = train_record(s, m.last_loss, config_lr(c, s - 1), m.tokens, now - m.t_last)
            append_jsonl(m.run.metrics_path, [record])
            m.tracker.log_records([record], "split")
            stack.loss_sum[r] = 0.0
            m.n_loss, m.tokens, m.t_last = 0, 0, now
        stack.write_back(r)
        if s in m.eval_steps:
            m.evaluate(stack.device)
        if s in m.ckpt_steps:
            m.checkpoint()
        if s >= c.steps or (stop_at is not None and s >= stop_at):
            leaving.append(r)
    if leaving:
        stack.remove(leaving)
