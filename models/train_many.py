"""Many small models trained as one program: models of one shape share a stack.

:func:`train_many` trains N models: TL-native transformers (fused forward) or the
Chomsky-hierarchy architectures of :func:`~hierlens.models.architectures.build_model` (their
own forward under ``vmap``; see :mod:`.train_stack`). Models whose architectures share a
shape (layers, widths, heads, context, vocabulary, norms, positions; for the Chomsky
architectures the whole config apart from the seed) and batch size form one stack: their
parameters are stacked on a leading model axis, one forward/backward per step computes every
model of the stack on its own batch, and AdamW runs as one fused kernel per distinct
(learning rate, weight decay) over the stack's rows. Seeds, learning rates, weight decays,
schedules, step counts, clipping and data seeds may differ between the models of a stack.
Models of other shapes go into other stacks, trained in the same loop.

Models never interact: each loss is its own mean, gradient clipping is per model (one norm
per model), and AdamW is elementwise, so each model follows the trajectory
:func:`~hierlens.models.train` gives it alone (up to float rounding; tested to 1e-5). On the
CPU a transformer stack skips padding as ``train`` does: the real tokens of all its models
run as one flat run of rows, model by model (:class:`~hierlens.models.fused_layouts.StackRows`).
A stack of one model runs that model's own forward.

Each run directory gets exactly what ``train`` writes: ``config.json``, the same
``metrics.jsonl`` records at the same steps, checkpoints at the same steps that ``train``
resumes from. Each model resumes from its own newest valid checkpoint, as ``train`` would
(models at different steps share a stack). A model that reaches its last step leaves its
stack; a model whose loss turns non-finite is reported, leaves its stack (keeping the weights
of its last finite training record) and the others go on.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from hierlens.core.atomic_io import append_jsonl
from hierlens.core.device import resolve_device

from .checkpoint import save_checkpoint
from .evaluate_many import evaluate_stack, stack_evaluable
from .run import Run
from .run_load import latest_valid_checkpoint, run_config_dict
from .tasks.base import Task
from .train import BatchSampler, TrainResult, load_optimizer_state, make_optimizer
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
from .train_stack import Stack, attach_data, stack_key, stack_params
from .transformer import ModelConfig

__all__ = ["train_many"]

log = logging.getLogger(__name__)


class _Member:
    """One model of a stack: its run, step, data, schedule and what it has reported."""

    def __init__(self, index, model, task, config, model_config, run, device, resume):
        self.index, self.model, self.task, self.config = index, model, task, config
        self.model_config, self.run = model_config, run
        self.params = stack_params(model)
        self.optimizer = make_optimizer(model, config, device)
        self.step = 0
        if resume:
            ckpt = latest_valid_checkpoint(run.path, map_location=device)
            if ckpt is not None:
                model.load_state_dict(ckpt.model_state)
                if ckpt.optimizer_state is not None:
                    load_optimizer_state(self.optimizer, ckpt.optimizer_state)
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


def _as_list(value, n: int, what: str) -> list:
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"train_many: {n} models but {len(value)} {what}")
        return list(value)
    return [value] * n


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
    :func:`~hierlens.models.build_transformer`, or models of
    :func:`~hierlens.models.architectures.build_model`) in stacks of one shape, one run
    directory each.

    ``tasks`` and ``configs`` are one for all or one per model; ``model_configs`` defaults to
    each model's own. Each run directory ends as :func:`~hierlens.models.train` would write it
    (``resume``, ``overwrite`` and ``stop_at`` as there, per model; ``callback`` gets the
    furthest model's step after every fused step). Returns one :class:`TrainResult` per model;
    ``stopped`` says why a model left early (``"diverged at step S"``). Holds every run
    directory's lock. ``TrainConfig.compile`` compiles each stack's forward as ``train``
    compiles its own (CUDA graphs on CUDA, with batch widths rounded up to multiples of 8;
    eager, with a warning, where compilation fails).
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
    devices, groups = [], {}
    for i, model in enumerate(models):
        mcfgs[i] = check_training_inputs(model, tasks[i], configs[i], mcfgs[i], f"models[{i}]: ")
        devices.append(resolve_device(configs[i].device))
        key = stack_key(model, configs[i], devices[i])
        if key is None:
            raise TypeError(
                f"models[{i}] ({type(model).__name__}) is neither a TL-native transformer the "
                "fused forward computes (see hierlens.models.fused) nor a model of "
                "hierlens.models.architectures.build_model; train it with train()"
            )
        groups.setdefault(key, []).append(i)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("train_many runs in one process; launch train() under torchrun")
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


def _train(members, groups, devices, progress, stop_at, callback) -> None:
    stacks = []
    for idxs in groups.values():
        mems = [members[i] for i in idxs]
        device = devices[idxs[0]]
        for m in mems:
            if m.step == 0:
                torch.manual_seed(m.config.seed)  # as train(): nothing draws from it
        active = [m for m in mems if m.step < m.config.steps]
        if not active:
            continue
        attach_data(active, device)
        first = active[0].config
        unpad = stack_key(active[0].model, first, device)[-1]
        stack = Stack(active, device, unpad, compile=first.compile)
        _evaluate(stack, [r for r, m in enumerate(active) if m.step == 0 and 0 in m.eval_steps])
        stacks.append(stack)
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


def _advance(stack: Stack, stop_at: int | None) -> None:
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
    leaving, finite = [], []
    for r in due:
        m = stack.members[r]
        c, s = m.config, m.step
        if not math.isfinite(sums[r]):
            m.stopped = f"diverged at step {s}"
            log.warning(
                "%s: training loss is %s by step %d; the model leaves the stack, keeping the "
                "weights of its last finite training record",
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
        finite.append(r)
    _evaluate(stack, [r for r in finite if stack.members[r].step in stack.members[r].eval_steps])
    for r in finite:
        m = stack.members[r]
        if m.step in m.ckpt_steps:
            m.checkpoint()
        if m.step >= m.config.steps or (stop_at is not None and m.step >= stop_at):
            leaving.append(r)
    if leaving:
        stack.remove(leaving)


def _evaluate(stack: Stack, rows: list[int]) -> None:
    """Evaluate members ``rows`` of ``stack`` at their step and write the records: members
    with the same task and evaluation set as one stacked forward per batch
    (:func:`~hierlens.models.evaluate_many.evaluate_stack`), the others alone."""
    groups: list[tuple[tuple, list[int]]] = []
    for r in rows:
        m = stack.members[r]
        c = m.config
        together = stack.spec is not None and stack_evaluable(m.task)
        key = (m.task, c.eval_n, c.eval_splits, c.seed) if together else (r,)
        for k, rs in groups:
            if k == key:
                rs.append(r)
                break
        else:
            groups.append((key, [r]))
    for _, rs in groups:
        first = stack.members[rs[0]]
        if len(rs) == 1:
            first.evaluate(stack.device)
            continue
        idx = torch.tensor(rs, device=stack.device)
        params = {n: t.detach().index_select(0, idx) for n, t in stack.p.items()}
        by_split = {
            split: evaluate_stack(first.task, stack.spec, params, examples, device=stack.device)
            for split, examples in first.evaluated.items()
        }
        for j, r in enumerate(rs):
            m = stack.members[r]
            m.last_eval = {split: metrics[j] for split, metrics in by_split.items()}
            write_evaluation(m.run, m.tracker, m.step, m.last_eval)
