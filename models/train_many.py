"""Many small models trained as one program: models of one shape share a stack.

:func:`train_many` trains S models: TL-native transformers (fused forward) or the
Chomsky-hierarchy architectures of :func:`~hierlens.models.architectures.build_model` (their
own forward under ``vmap``; see :mod:`.train_stack`). Models whose architectures share a
shape (layers, widths, heads, context, vocabulary, norms, positions; for the Chomsky
architectures the whole config apart from the seed) and batch size form one stack: their
parameters are stacked on a leading model axis, one forward/backward per step computes every
model of the stack on its own batch, and one optimizer step
(:class:`hierlens.core.optim.StackedAdamW`) clips and updates every model with its own
settings and learning rate. Seeds, learning rates, weight decays,
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
resumes from (``train`` itself runs the same loop, :mod:`.train_loop`, on a stack of one). Each model resumes from its own newest valid checkpoint, as ``train`` would
(models at different steps share a stack). A model that reaches its last step leaves its
stack; a model whose loss turns non-finite is reported, leaves its stack (keeping the weights
of its last finite training record) and the others go on.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from hierlens.core.device import resolve_device

from .run import Run
from .run_load import run_config_dict
from .tasks.base import Task
from .train import TrainResult
from .train_config import TrainConfig
from .train_loop import Member, evaluate_members, run_stacks
from .train_run import check_training_inputs, prepare_run_dir
from .train_stack import Stack, attach_data, stack_key, stack_params
from .transformer import ModelConfig

__all__ = ["train_many"]

log = logging.getLogger(__name__)


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
        try:
            for i in range(n):
                models[i].to(devices[i])
                members.append(
                    Member(
                        models[i],
                        tasks[i],
                        configs[i],
                        mcfgs[i],
                        runs[i],
                        devices[i],
                        resume,
                        params=stack_params(models[i]),
                    )  # fmt: skip
                )
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
        evaluate_members(
            stack, [r for r, m in enumerate(active) if m.step == 0 and 0 in m.eval_steps]
        )
        stacks.append(stack)
    total = max((m.config.steps - m.step for s in stacks for m in s.members), default=0)
    bar = tqdm(total=total, disable=not progress, desc="train_many", leave=False)
    run_stacks(stacks, members, bar, stop_at, callback)
