"""The training loop: next-token (or masked-target) cross-entropy on a task, with exact resume.

One loop serves CPU and GPU. Batches are gathered as tensor slices of a pre-sampled pool of
training examples; the rows of step ``s`` are a pure function of ``(seed, s)``, and the
learning rate a pure function of ``s``, so resuming from a checkpoint (weights, optimizer
state, RNG state) reproduces an uninterrupted run bit for bit on CPU (with the same number of torch
threads: the order of floating-point reductions depends on it). Inside a step nothing
waits for the device: the loss is accumulated on the device and read every ``log_every``
steps. On CUDA the loop uses fused AdamW, bf16 autocast (``amp=True``), pinned host memory
with non-blocking copies, and optionally ``torch.compile``.

The training story reads in three files: this loop, its configuration and schedules
(:mod:`.train_config`), and the forward pass it differentiates (:mod:`.forward`, a hook-free
mirror of a TL-native bridge). Every path it writes comes from :class:`~hierlens.models.Run`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from hierlens.core import distributed as D
from hierlens.core.atomic_io import append_jsonl
from hierlens.core.device import resolve_device
from hierlens.core.trackers import MultiLogger

from .architectures import ArchConfig
from .checkpoint import restore_rng, save_checkpoint
from .forward import compiled, training_forward
from .run import Run
from .run_load import latest_valid_checkpoint, run_config_dict
from .run_lock import locks_run
from .tasks.base import IGNORE_INDEX, Task, pad_examples
from .train_config import LOSS_ON, TrainConfig
from .train_run import (
    RunConflictError,
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

__all__ = [
    "LOSS_ON",
    "Batch",
    "BatchSampler",
    "RunConflictError",
    "TrainConfig",
    "TrainingDiverged",
    "TrainResult",
    "make_optimizer",
    "train",
]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns: where the run lives and where it stopped."""

    run_dir: Path
    step: int
    train_loss: float | None
    eval: dict[str, dict[str, float]]
    #: why training ended before ``config.steps`` other than ``stop_at``
    #: (:func:`~hierlens.models.train_many.train_many` sets ``"diverged at step S"`` for a
    #: model whose loss turned non-finite)
    stopped: str | None = None


class TrainingDiverged(ValueError):
    """Training stopped because the loss turned non-finite (NaN or inf)."""


def next_token_targets(tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Language-model targets for padded ``(N, T)`` tokens: position ``t`` predicts token
    ``t + 1``; the last real position and the padding get :data:`IGNORE_INDEX`."""
    targets = torch.full_like(tokens, IGNORE_INDEX)
    targets[:, :-1] = tokens[:, 1:]
    pos = torch.arange(tokens.shape[1])
    targets[pos[None, :] >= (lengths[:, None] - 1)] = IGNORE_INDEX
    return targets


class Batch(NamedTuple):
    """One step's batch on the device: ``tokens``, ``targets`` and ``mask`` ``(B, T)``
    (right-padded, ``mask`` True at real tokens), ``n_tokens`` real tokens, and ``keep``:
    ``None`` or the flat indices ``(n,)`` into ``B * T`` of the real tokens (for the
    unpadded forward)."""

    tokens: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor
    n_tokens: int
    keep: torch.Tensor | None = None


class BatchSampler:
    """Draws training batches from a padded pool of examples; the rows of step ``s`` are a
    pure function of ``(seed, s)`` and each batch is cut to its longest sequence.

    The pool lives on the training device, so a step moves only its row indices there (no
    per-step host allocations or copies of batch tensors). ``unpad``: also give the flat
    indices of the real tokens (``Batch.keep``); ``width_multiple``: round each batch's
    width up to a multiple of this (few distinct shapes, for CUDA graphs).
    """

    def __init__(
        self,
        task: Task,
        config: TrainConfig,
        device: torch.device,
        *,
        unpad: bool = False,
        width_multiple: int = 1,
    ) -> None:
        examples = task.sample(config.train_pool, "train", config.seed)
        pool = pad_examples(examples, task.pad_id)
        targets = pool.targets
        if config.loss_on == "sequence":
            targets = next_token_targets(pool.tokens, pool.lengths)
        self.tokens = pool.tokens.to(device)
        self.targets = targets.to(device)
        self._host_targets = targets  # for counting trained targets without a device sync
        self.lengths = pool.lengths.numpy()
        self.seed = config.seed
        self.batch_size = config.batch_size
        self.device = device
        self.unpad = unpad
        self.width_multiple = width_multiple

    def rows(self, step: int) -> np.ndarray:
        return np.random.default_rng([self.seed, step, 0xBA7C]).integers(
            0, len(self.lengths), self.batch_size
        )

    def _width(self, lengths: np.ndarray) -> int:
        width = int(lengths.max())
        m = self.width_multiple
        return min(-(-width // m) * m, self.tokens.shape[1])

    def _batch(self, rows: np.ndarray, width: int, n_tokens: int) -> Batch:
        lengths = self.lengths[rows]
        real = np.arange(width)[None, :] < lengths[:, None]  # (B, T) on the host
        nb = self.device.type == "cuda"
        idx = torch.from_numpy(rows).to(self.device, non_blocking=nb)
        keep = None
        if self.unpad:
            keep = torch.from_numpy(np.flatnonzero(real)).to(self.device, non_blocking=nb)
        return Batch(
            self.tokens[idx, :width],
            self.targets[idx, :width],
            torch.from_numpy(real).to(self.device, non_blocking=nb),
            n_tokens,
            keep,
        )

    def __call__(self, step: int) -> Batch:
        """The batch of ``step``."""
        rows = self.rows(step)
        lengths = self.lengths[rows]
        return self._batch(rows, self._width(lengths), int(lengths.sum()))

    def shard(self, step: int, rank: int, world: int) -> tuple[Batch, int]:
        """Rank ``rank``'s contiguous slice of step ``step``'s global batch (the rows a
        single process would draw, padded to the same width), with ``n_tokens`` the real
        tokens of the whole global batch, and the number of trained targets in the global
        batch."""
        rows = self.rows(step)
        lengths = self.lengths[rows]
        width = self._width(lengths)
        n_targets = int((self._host_targets[torch.from_numpy(rows), :width] != IGNORE_INDEX).sum())
        a, b = D.shard_range(len(rows), rank, world)
        return self._batch(rows[a:b], width, int(lengths.sum())), n_targets


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


def make_optimizer(
    model: torch.nn.Module, config: TrainConfig, device: torch.device
) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only, as one fused kernel per group where the
    device has one (CUDA; the CPU since torch 2.4), else the multi-tensor (``foreach``) one."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    kwargs: dict[str, Any] = {"lr": config.lr, "betas": tuple(config.betas)}
    try:
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, ValueError):  # no fused kernel for this device or dtype
        return torch.optim.AdamW(groups, foreach=True, **kwargs)


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

    Holds the run directory's writer lock (:meth:`~hierlens.models.Run.lock`) while it runs.
    A fresh run seeds torch's global RNG with ``config.seed`` (what dropout draws from), so
    identical runs save identical checkpoints.
    """
    model_config = check_training_inputs(model, task, config, model_config)
    device = resolve_device(config.device)
    distributed = D.init_from_env(device)  # under torchrun: join the process group
    device = D.local_device(device)
    rank, world, main = D.rank(), D.world_size(), D.is_main()
    if distributed and config.batch_size < world:
        raise ValueError(f"batch_size={config.batch_size} is smaller than the {world} processes")
    progress = progress and main
    run = Run(run_dir)
    if main:
        prepare_run_dir(run, run_config_dict(task, model_config, config), resume, overwrite)
    D.barrier()

    model.to(device)
    optimizer = make_optimizer(model, config, device)
    start = 0
    if resume:
        ckpt = latest_valid_checkpoint(run.path, map_location=device)
        if ckpt is not None:
            model.load_state_dict(ckpt.model_state)
            if ckpt.optimizer_state is not None:
                load_optimizer_state(optimizer, ckpt.optimizer_state)
            restore_rng(ckpt.rng_state)
            start = ckpt.step
            log.info("resuming %s from step %d", run.path, start)
    if start == 0:  # the RNG state a checkpoint saves: a function of the seed, not of the process
        torch.manual_seed(config.seed)
    if main:
        truncate_metrics(run, start)
    D.barrier()
    if start >= config.steps:
        return TrainResult(run.path, start, None, {})

    compile_forward = config.compile
    unpad = (
        config.unpad if config.unpad is not None else (device.type == "cpu" and not compile_forward)
    )
    sampler = BatchSampler(
        task,
        config,
        device,
        unpad=unpad,
        width_multiple=8 if (compile_forward and device.type == "cuda") else 1,
    )
    eval_steps = set(config.eval_steps)
    evaluated = eval_sets(task, config)
    ckpt_steps = set(config.checkpoint_steps)
    forward = training_forward(model)
    if compile_forward:
        forward = compiled(forward, device)
    if distributed:
        from torch.nn.parallel import DistributedDataParallel

        ddp = DistributedDataParallel(
            _TrainingModule(model, forward),
            device_ids=[device.index] if device.type == "cuda" else None,
        )
        forward = ddp
    additive_eval = type(task).evaluate is Task.evaluate
    use_amp = config.amp and device.type == "cuda"
    last_eval: dict[str, dict[str, float]] = {}
    last_loss: float | None = None
    tracker = MultiLogger()
    if main:  # the same records as metrics.jsonl, at the same steps
        tracker = open_tracker(run, task, model_config, config, resume, start)

    def evaluate(step: int) -> None:
        for split, examples in evaluated.items():
            if distributed:
                metrics = _sharded_evaluate(task, model, split, examples, device, additive_eval)
            else:
                metrics = task.evaluate(model, split, examples=examples, device=device)
            last_eval[split] = metrics
        if main:
            write_evaluation(run, tracker, step, last_eval)
        D.barrier()

    if start == 0 and 0 in eval_steps:
        try:
            evaluate(0)
        except BaseException:
            tracker.close()
            raise

    model.train()
    loss_sum = torch.zeros((), device=device)
    n_loss = 0
    tokens_seen = 0
    t_last = time.perf_counter()
    bar = tqdm(
        total=config.steps,
        initial=start,
        disable=not progress,
        desc=f"train {task.name}",
        leave=False,
    )
    step = start
    stopped = None
    try:
        while step < config.steps:
            if distributed:
                batch, n_targets = sampler.shard(step, rank, world)
            else:
                batch = sampler(step)
            targets = batch.targets.reshape(-1)
            if batch.keep is not None:
                targets = targets[batch.keep]
            lr = config_lr(config, step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = forward(batch.tokens, batch.mask, batch.keep)
            if distributed:
                # DDP averages gradients over ranks: scale this rank's summed loss so the
                # average is the mean over the global batch's trained positions.
                loss = F.cross_entropy(
                    logits.float().reshape(-1, logits.shape[-1]),
                    targets,
                    ignore_index=IGNORE_INDEX,
                    reduction="sum",
                ) * (world / max(n_targets, 1))
            else:
                loss = F.cross_entropy(
                    logits.float().reshape(-1, logits.shape[-1]),
                    targets,
                    ignore_index=IGNORE_INDEX,
                )
            loss.backward()
            if config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip, foreach=True)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            loss_sum += loss.detach()
            n_loss += 1
            tokens_seen += batch.n_tokens
            bar.update(1)

            if step % config.log_every == 0 or step == config.steps:
                now = time.perf_counter()
                if distributed:
                    D.all_reduce_sum([loss_sum])
                    loss_sum /= world
                last_loss = float(loss_sum) / n_loss
                if not math.isfinite(last_loss):
                    stopped = f"diverged at step {step}"
                    log.warning(
                        "%s: training loss is %s by step %d; training stops (the checkpoints "
                        "so far are kept)",
                        run.path,
                        last_loss,
                        step,
                    )
                    break
                if main:
                    record = train_record(step, last_loss, lr, tokens_seen, now - t_last)
                    append_jsonl(run.metrics_path, [record])
                    tracker.log_records([record], "split")
                bar.set_postfix(loss=f"{last_loss:.4f}")
                loss_sum.zero_()
                n_loss, tokens_seen, t_last = 0, 0, now
            if step in eval_steps:
                evaluate(step)
                model.train()
            if step in ckpt_steps:
                if main:
                    save_checkpoint(
                        run.checkpoint_dir(step),
                        step,
                        model,
                        optimizer,
                        extra={"train_loss": last_loss},
                    )
                D.barrier()
            if callback is not None:
                callback(step)
            if stop_at is not None and step >= stop_at:
                break
    finally:
        bar.close()
        tracker.close()
    model.eval()
    return TrainResult(run.path, step, last_loss, last_eval, stopped=stopped)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load a checkpoint's optimizer ``state`` (moments and step counts) into ``optimizer``,
    keeping ``optimizer``'s hyper-parameters: they come from the run's config, never from
    the checkpoint's file."""
    hyper = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    if len(state.get("param_groups", ())) != len(hyper):
        raise ValueError(
            f"the checkpoint's optimizer has {len(state.get('param_groups', ()))} parameter "
            f"groups, the model's {len(hyper)}"
        )
    optimizer.load_state_dict(state)
    for group, kept in zip(optimizer.param_groups, hyper, strict=True):
        group.update(kept)


def _sharded_evaluate(
    task: Task,
    model: torch.nn.Module,
    split: str,
    examples: list,
    device: torch.device,
    additive: bool,
) -> dict[str, float]:
    """``task.evaluate`` over ``examples`` with each rank evaluating its slice and the sums
    reduced over ranks (tasks whose metrics are sums of per-batch counts); tasks with their
    own aggregation are evaluated whole on rank 0 and the result broadcast."""
    import torch.distributed as dist

    a, b = D.shard_range(len(examples))
    if not additive or b - a == 0 or len(examples) < D.world_size():
        box = [
            task.evaluate(model, split, examples=examples, device=device) if D.is_main() else None
        ]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    totals = task.evaluation_totals(model, examples[a:b], device=device)
    keys = sorted(totals)
    flat = torch.stack([t for k in keys for t in totals[k]]).to(torch.float64)
    D.all_reduce_sum([flat])
    out = {}
    for i, k in enumerate(keys):
        num, den = float(flat[2 * i]), float(flat[2 * i + 1])
        out[k] = num / den if den > 0 else float("nan")
    out["n"] = len(examples)
    return out
