"""The training loop of one model: next-token (or masked-target) cross-entropy on a task,
with exact resume.

:func:`train` runs the stacked trainer (:mod:`.train_loop`) on a stack of one: the model
trains on its own parameters (:class:`~hierlens.models.module_stack.ModuleStack`) with the
one optimizer step of :class:`hierlens.core.optim.StackedAdamW` (gradient clipping and
AdamW), and under ``torchrun`` in ``DistributedDataParallel``. Batches are gathered as
tensor slices of a pre-sampled pool of training examples (:mod:`.batches`); the rows of step
``s`` are a pure function of ``(seed, s)``, and the learning rate a pure function of ``s``,
so resuming from a checkpoint (weights, optimizer state, RNG state) reproduces an
uninterrupted run bit for bit on CPU (with the same number of torch threads: the order of
floating-point reductions depends on it). Inside a step nothing waits for the device: the
loss is accumulated on the device and read every ``log_every`` steps. On CUDA training uses
fused AdamW, bf16 autocast (``autocast``), pinned host memory with non-blocking copies, and
optionally ``torch.compile``.

The training story reads in a few files: this entry point, its configuration and schedules
(:mod:`.train_config`), the loop (:mod:`.train_loop`) and the forward pass it differentiates
(:mod:`.forward`, a hook-free mirror of a TL-native bridge). Every path it writes comes from
:class:`~hierlens.models.Run`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm.auto import tqdm

from hierlens.core import distributed as D
from hierlens.core.device import resolve_device

from .architectures import ArchConfig
from .checkpoint import restore_rng
from .module_stack import ModuleStack
from .run import Run
from .run_load import run_config_dict
from .run_lock import locks_run
from .tasks.base import Task
from .train_config import LOSS_ON, TrainConfig
from .train_loop import Member, evaluate_members, run_stacks
from .train_run import RunConflictError, check_training_inputs, prepare_run_dir
from .transformer import ModelConfig

__all__ = [
    "LOSS_ON",
    "RunConflictError",
    "TrainConfig",
    "TrainingDiverged",
    "TrainResult",
    "train",
]


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns: where the run lives and where it stopped."""

    run_dir: Path
    step: int
    train_loss: float | None
    eval: dict[str, dict[str, float]]
    #: why training ended before ``config.steps`` other than ``stop_at``
    #: (``"diverged at step S"`` for a model whose loss turned non-finite)
    stopped: str | None = None


class TrainingDiverged(ValueError):
    """Training stopped because the loss turned non-finite (NaN or inf): what a caller that
    needs the model raises for a :class:`TrainResult` whose ``stopped`` says so (the
    pipeline; ``hierlens train`` exits with status 3 instead)."""


@locks_run("run_dir")
def train(
    model: torch.nn.Module,
    task: Task,
    config: TrainConfig,
    run_dir: str | os.PathLike,
    *,
    model_config: ModelConfig | ArchConfig | None = None,
    resume: bool = True,
    overwrite: bool = False,
    progress: bool = True,
    stop_at: int | None = None,
    callback: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train ``model`` on ``task`` and write the run directory.

    Loss: cross-entropy between the logits at each position and ``targets`` there (the next
    token for language-model tasks; masked positions for masked tasks), averaged over trained
    positions. Writes ``config.json``, ``metrics.jsonl`` (``split="train"`` records with
    loss, lr and tokens/s; one record per evaluated split) and atomic checkpoints.

    Args:
        model: a model from :func:`~hierlens.models.build_transformer` or
            :func:`~hierlens.models.architectures.build_model` (or any module mapping
            ``(B, T)`` tokens to ``(B, T, d_vocab)`` logits).
        model_config: a :class:`ModelConfig` or an
            :class:`~hierlens.models.architectures.ArchConfig`, saved in ``config.json`` so
            the run can be reloaded (taken from the model when one of those builders made it).
        resume: continue from the newest valid checkpoint in ``run_dir`` (corrupt
            checkpoints are reported and skipped). With ``resume=False`` an existing run is
            an error unless ``overwrite=True``.
        stop_at: stop after this step as if interrupted (resume later to continue).
        callback: called with the step number after every optimizer step.

    A loss that turns NaN or infinite (read at the logged, evaluated and checkpointed steps)
    stops training there: the checkpoints written before it are kept, and the result's
    ``stopped`` is ``"diverged at step S"`` (see :class:`TrainingDiverged`).

    Holds the run directory's writer lock (:meth:`~hierlens.models.Run.lock`) while it runs.
    A fresh run seeds torch's global RNG with ``config.seed`` (what dropout draws from), so
    identical runs save identical checkpoints.
    """
    model_config = check_training_inputs(model, task, config, model_config)
    device = resolve_device(config.device)
    distributed = D.init_from_env(device)  # under torchrun: join the process group
    device = D.local_device(device)
    if distributed and config.batch_size < D.world_size():
        raise ValueError(
            f"batch_size={config.batch_size} is smaller than the {D.world_size()} processes"
        )
    main = D.is_main()
    run = Run(run_dir)
    if main:
        prepare_run_dir(run, run_config_dict(task, model_config, config), resume, overwrite)
    D.barrier()

    model.to(device)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    member = Member(
        model, task, config, model_config, run, device, resume,
        params=params, own_rng=True, writes=main,
    )  # fmt: skip
    if member.step > 0:
        restore_rng(member.rng_state)
    else:  # the RNG state a checkpoint saves: a function of the seed, not of the process
        torch.manual_seed(config.seed)
    D.barrier()
    try:
        if member.step < config.steps:
            stack = ModuleStack(member, device, distributed)
            if member.step == 0 and 0 in member.eval_steps:
                evaluate_members(stack, [0])
            model.train()
            bar = tqdm(
                total=config.steps,
                initial=member.step,
                disable=not (progress and main),
                desc=f"train {task.name}",
                leave=False,
            )
            run_stacks([stack], [member], bar, stop_at, callback)
    finally:
        member.tracker.close()
    model.eval()
    return TrainResult(run.path, member.step, member.last_loss, member.last_eval, member.stopped)
