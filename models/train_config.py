"""Training hyper-parameters (:class:`TrainConfig`) and the schedules they describe: which
steps are evaluated or checkpointed (every N steps and/or log-spaced). The learning rate of
every step is :func:`hierlens.core.optim.lr_at` of the config's fields."""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

from hierlens.core.config import Config
from hierlens.core.loggers import check_trackers
from hierlens.core.optim import SCHEDULES
from hierlens.core.validate import check_int, check_number

from .tasks.base import SPLITS

LOSS_ON = ("targets", "sequence")


def log_spaced_steps(total_steps: int, count: int) -> set[int]:
    """About ``count`` distinct steps in ``[1, total_steps]`` spaced evenly in log scale."""
    if count <= 0 or total_steps <= 0:
        return set()
    if count == 1:
        return {total_steps}
    return {max(1, round(math.exp(math.log(total_steps) * i / (count - 1)))) for i in range(count)}


def scheduled_steps(
    total_steps: int, every: int = 0, log_count: int = 0, *, include_zero: bool = False
) -> list[int]:
    """Sorted steps: multiples of ``every``, ``log_count`` log-spaced steps, always the last
    step, and step 0 when ``include_zero``."""
    steps = {total_steps} | log_spaced_steps(total_steps, log_count)
    if every > 0:
        steps |= set(range(every, total_steps + 1, every))
    if include_zero:
        steps.add(0)
    return sorted(steps)


@dataclasses.dataclass(frozen=True)
class TrainConfig(Config):
    """Training hyper-parameters and schedules.

    Parameters:
        steps: number of optimizer steps.
        batch_size: sequences per step.
        lr: peak learning rate.
        warmup_steps: steps of linear warmup to ``lr``.
        schedule: decay after warmup, "cosine", "linear" or "constant", to
            ``min_lr_ratio * lr``.
        min_lr_ratio: the final learning rate as a fraction of ``lr``.
        betas: AdamW's (beta1, beta2).
        weight_decay: AdamW weight decay (on matrices only, not on biases/norms).
        grad_clip: global gradient-norm clip (None: off).
        log_every: steps between training-loss records (the only host-device sync).
        eval_every: evaluate every N steps (0: off; step 0 and the last step are evaluated
            when this or ``eval_log_points`` is set).
        eval_log_points: also evaluate at this many log-spaced steps.
        eval_n: examples per evaluated split.
        eval_splits: which splits to evaluate.
        checkpoint_every: checkpoint every N steps (the last step is always checkpointed).
        checkpoint_log_points: also checkpoint at this many log-spaced steps.
        train_pool: number of training examples sampled once and drawn from with replacement.
        seed: seeds the training pool, the batch order and the RNG.
        device: "cpu", "cuda", ... (None: CUDA when available).
        autocast: bf16 autocast of the forward pass (None: on CUDA only).
        compile: compile the training forward with ``torch.compile`` (on CUDA in
            ``reduce-overhead`` mode, which replays CUDA graphs; batch widths are then rounded
            up to multiples of 8 so few shapes occur). Off by default: on the CPU
            ``benchmarks/train_loop.py`` measures it slower than the eager fused forward.
            Falls back to the eager forward, with a warning, where compilation fails.
        unpad: run the norms, products and MLPs on the real tokens of each ragged batch only,
            not on its padding (the same numbers: padding never reaches a real position or
            the loss). ``None``: on the CPU, where ``benchmarks/train_loop.py`` measures it
            faster, and not on CUDA (launch-bound at these sizes) or under ``compile``.
        loss_on: ``"targets"`` trains only the positions the task gives a target (for the
            transduction tasks, the output after the marker); ``"sequence"`` trains a language
            model on every position (the next token of the whole padded-free sequence), as
            [Murty2023b] train question formation and tense inflection. Needs a
            next-token task. Evaluation always uses the task's own targets.
        log_to: experiment trackers that get the scalars of ``metrics.jsonl`` as they are
            written, any of "tensorboard", "wandb", "mlflow" (the ``tracking`` extra; see
            :mod:`hierlens.core.loggers`).
    """

    FIELD_CHOICES: ClassVar[dict[str, tuple]] = {"schedule": SCHEDULES, "loss_on": LOSS_ON}

    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 100
    schedule: str = "cosine"
    min_lr_ratio: float = 0.1
    betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = 0.01
    grad_clip: float | None = 1.0
    log_every: int = 50
    eval_every: int = 500
    eval_log_points: int = 0
    eval_n: int = 500
    eval_splits: tuple[str, ...] = ("test_id", "test_ood")
    checkpoint_every: int = 500
    checkpoint_log_points: int = 0
    train_pool: int = 20_000
    seed: int = 0
    device: str | None = None
    autocast: bool | None = None
    compile: bool = False
    unpad: bool | None = None
    loss_on: str = "targets"
    log_to: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every", "eval_n", "train_pool"):
            check_int(f"TrainConfig.{name}", getattr(self, name))
        for name in (
            "warmup_steps",
            "eval_every",
            "eval_log_points",
            "checkpoint_every",
            "checkpoint_log_points",
        ):
            check_int(f"TrainConfig.{name}", getattr(self, name), minimum=0)
        check_number("TrainConfig.lr", self.lr, strict=True)
        self.check_choices()
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(
                f"TrainConfig.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}"
            )
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"TrainConfig.betas must be two numbers in [0, 1), got {self.betas!r}")
        check_number("TrainConfig.weight_decay", self.weight_decay)
        check_number("TrainConfig.grad_clip", self.grad_clip, strict=True, none=True)
        object.__setattr__(self, "log_to", check_trackers(self.log_to, "TrainConfig.log_to"))
        bad = [s for s in self.eval_splits if s not in SPLITS]
        if bad:
            raise ValueError(
                f"TrainConfig.eval_splits: unknown split(s) {bad}; expected a subset of {SPLITS}"
            )

    @property
    def eval_steps(self) -> list[int]:
        """Steps evaluated (step 0 included), empty when evaluation is off."""
        if self.eval_every == 0 and self.eval_log_points == 0:
            return []
        return scheduled_steps(self.steps, self.eval_every, self.eval_log_points, include_zero=True)

    @property
    def checkpoint_steps(self) -> list[int]:
        """Steps checkpointed (always including the last)."""
        return scheduled_steps(self.steps, self.checkpoint_every, self.checkpoint_log_points)
