"""The stacked trainer's loop, shared by :func:`~hierlens.models.train` (one model: a
:class:`~hierlens.models.module_stack.ModuleStack`) and
:func:`~hierlens.models.train_many.train_many` (stacks of models:
:class:`~hierlens.models.train_stack.Stack`).

Each round, every stack takes one training step (:func:`advance`); then each of its members
whose step is due writes its training record, is evaluated and checkpointed, and leaves the
stack when it finished, diverged (a non-finite loss) or reached ``stop_at``. Losses are
read from the device only at those steps. Under ``torchrun`` (a module stack) every rank
runs the loop, rank 0 alone writes, and the ranks meet after each evaluation and
checkpoint.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from hierlens.core import distributed as D
from hierlens.core.atomic_io import append_jsonl
from hierlens.core.optim import StackedAdamW
from hierlens.core.trackers import MultiLogger

from .checkpoint import save_checkpoint
from .evaluate_many import evaluate_stack, stack_evaluable
from .run import Run
from .run_load import latest_valid_checkpoint
from .tasks.base import Task
from .train_config import TrainConfig
from .train_run import (
    config_lr,
    eval_sets,
    open_tracker,
    train_record,
    truncate_metrics,
    write_evaluation,
)

__all__ = ["Member", "advance", "evaluate_members", "run_stacks"]

log = logging.getLogger(__name__)


class Member:
    """One model being trained: its run, step, data, optimizer state to resume from, and
    what it has reported.

    ``params``: the tensors a stack trains (``{name: parameter}``); ``own_rng``: the model
    draws from torch's global RNG (dropout) as it trains, so a checkpoint saves that state
    and a resumed run restores it (``rng_state``); otherwise a checkpoint saves the state
    seeded with ``config.seed``, which is what such a run holds at every step.
    ``writes``: this process writes the run's files (rank 0).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        task: Task,
        config: TrainConfig,
        model_config,
        run: Run,
        device: torch.device,
        resume: bool,
        *,
        params: dict[str, torch.Tensor],
        own_rng: bool = False,
        writes: bool = True,
    ) -> None:
        self.model, self.task, self.config = model, task, config
        self.model_config, self.run, self.params = model_config, run, params
        self.own_rng, self.writes = own_rng, writes
        self.step = 0
        self.opt_state: dict[str, torch.Tensor] | None = None
        self.rng_state: dict[str, torch.Tensor] = {}
        if resume:
            ckpt = latest_valid_checkpoint(run.path, map_location=device)
            if ckpt is not None:
                model.load_state_dict(ckpt.model_state)
                self.opt_state, self.rng_state = ckpt.optimizer_state, ckpt.rng_state
                self.step = ckpt.step
                log.info("resuming %s from step %d", run.path, self.step)
        if writes:
            truncate_metrics(run, self.step)
        self.eval_steps = set(config.eval_steps)
        self.ckpt_steps = set(config.checkpoint_steps)
        active = self.step < config.steps
        self.evaluated = eval_sets(task, config) if active else {}
        self.tracker = MultiLogger()
        if writes and active:
            self.tracker = open_tracker(run, task, model_config, config, resume, self.step)
        self.data = None
        self.last_loss: float | None = None
        self.last_eval: dict[str, dict[str, float]] = {}
        self.stopped: str | None = None
        self.n_loss = 0
        self.tokens = 0
        self.t_last = time.perf_counter()

    def restore_optimizer(self, optimizer: StackedAdamW, rows: list[int] | None = None) -> None:
        """Load the optimizer state of the checkpoint this member resumes from into
        ``optimizer`` (its ``rows``); a ``ValueError`` naming the run when it does not fit."""
        if self.opt_state is None:
            return
        try:
            optimizer.load_state_dict(self.opt_state, rows=rows)
        except ValueError as exc:
            raise ValueError(
                f"{self.run.path}: the optimizer state of the checkpoint at step {self.step} "
                f"does not fit this model ({exc}); resume=False starts the run again"
            ) from exc

    def evaluate(self, device: torch.device) -> None:
        """Evaluate every split at the current step (each rank a shard of the examples
        under ``torchrun``) and write the records."""
        for split, examples in self.evaluated.items():
            if D.is_distributed():
                metrics = _sharded_evaluate(self.task, self.model, split, examples, device)
            else:
                metrics = self.task.evaluate(self.model, split, examples=examples, device=device)
            self.last_eval[split] = metrics
        self.model.train()
        self.write_evaluation()

    def write_evaluation(self) -> None:
        if self.writes:
            write_evaluation(self.run, self.tracker, self.step, self.last_eval)
        D.barrier()

    def checkpoint(self, optimizer_state: dict[str, torch.Tensor]) -> None:
        """Save the model, ``optimizer_state`` and the RNG state at the current step."""
        if self.writes:
            with torch.random.fork_rng(devices=[], enabled=not self.own_rng):
                if not self.own_rng:
                    torch.manual_seed(self.config.seed)
                save_checkpoint(
                    self.run.checkpoint_dir(self.step),
                    self.step,
                    self.model,
                    optimizer_state,
                    extra={"train_loss": self.last_loss},
                )
        D.barrier()

    def record(self, loss_sum: float) -> None:
        """Write the training record of the current step from the losses summed since the
        last one."""
        now = time.perf_counter()
        c, s = self.config, self.step
        self.last_loss = loss_sum / self.n_loss
        record = train_record(
            s, self.last_loss, config_lr(c, s - 1), self.tokens, now - self.t_last
        )
        if self.writes:
            append_jsonl(self.run.metrics_path, [record])
            self.tracker.log_records([record], "split")
        self.n_loss, self.tokens, self.t_last = 0, 0, now


def run_stacks(
    stacks: list,
    members: list[Member],
    bar: tqdm,
    stop_at: int | None,
    callback: Callable[[int], None] | None,
) -> None:
    """Step every stack with members left until none has; ``callback`` gets the furthest
    of ``members``' steps after every round."""
    try:
        while any(s.members for s in stacks):
            for stack in stacks:
                if stack.members:
                    advance(stack, stop_at)
            bar.update(1)
            if callback is not None:
                callback(max(m.step for m in members))
    finally:
        bar.close()


def _due(m: Member, stop_at: int | None) -> bool:
    c, s = m.config, m.step
    return (
        s % c.log_every == 0
        or s >= c.steps
        or s in m.eval_steps
        or s in m.ckpt_steps
        or (stop_at is not None and s >= stop_at)
    )


def use_autocast(config: TrainConfig, device: torch.device) -> bool:
    """Whether ``config`` trains under bf16 autocast on ``device``."""
    return device.type == "cuda" if config.autocast is None else config.autocast


def advance(stack, stop_at: int | None) -> None:
    """One step of ``stack``, then each member's records, evaluation, checkpoint, and
    leaving the stack when it finished, diverged or reached ``stop_at``."""
    n_tokens = stack.step(use_autocast(stack.members[0].config, stack.device))
    due = []
    for r, m in enumerate(stack.members):
        m.step += 1
        m.n_loss += 1
        m.tokens += n_tokens[r]
        if _due(m, stop_at):
            due.append(r)
    if not due:
        return
    sums = stack.losses()  # the only host sync: at records, evaluations, checkpoints
    leaving, finite = [], []
    for r in due:
        m = stack.members[r]
        if not math.isfinite(sums[r]):
            m.stopped = f"diverged at step {m.step}"
            log.warning(
                "%s: training loss is %s by step %d; the model leaves the stack and stops",
                m.run.path,
                sums[r],
                m.step,
            )
            leaving.append(r)
            continue
        if m.step % m.config.log_every == 0 or m.step >= m.config.steps:
            m.record(sums[r])
            stack.loss_sum[r] = 0.0
        stack.write_back(r)
        finite.append(r)
    evaluate_members(
        stack, [r for r in finite if stack.members[r].step in stack.members[r].eval_steps]
    )
    for r in finite:
        m = stack.members[r]
        if m.step in m.ckpt_steps:
            m.checkpoint(stack.optimizer_state(r))
        if m.step >= m.config.steps or (stop_at is not None and m.step >= stop_at):
            leaving.append(r)
    if leaving:
        stack.remove(leaving)


def evaluate_members(stack, rows: list[int]) -> None:
    """Evaluate members ``rows`` of ``stack`` at their step and write the records: members
    of a fused stack with the same task and evaluation set as one stacked forward per batch
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
            m.write_evaluation()


def _sharded_evaluate(
    task: Task,
    model: torch.nn.Module,
    split: str,
    examples: list,
    device: torch.device,
) -> dict[str, float]:
    """``task.evaluate`` over ``examples`` with each rank evaluating its slice and the sums
    reduced over ranks (tasks whose metrics are sums of per-batch counts); tasks with their
    own aggregation are evaluated whole on rank 0 and the result broadcast."""
    import torch.distributed as dist

    additive = type(task).evaluate is Task.evaluate
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
