"""Learning-rate schedules and step schedules (every N steps and/or log-spaced)."""

from __future__ import annotations

import math

SCHEDULES = ("cosine", "linear", "constant")


def lr_at(
    step: int,
    *,
    base_lr: float,
    total_steps: int,
    warmup_steps: int = 0,
    schedule: str = "cosine",
    min_lr_ratio: float = 0.0,
) -> float:
    """Learning rate for the optimizer step that takes the model from ``step`` to ``step + 1``.

    Linear warmup from ``base_lr / warmup_steps`` to ``base_lr`` over ``warmup_steps`` steps,
    then ``cosine`` or ``linear`` decay to ``min_lr_ratio * base_lr`` at ``total_steps``, or
    ``constant``. A pure function of the step, so resuming needs no scheduler state.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return base_lr
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    floor = base_lr * min_lr_ratio
    if schedule == "linear":
        return floor + (base_lr - floor) * (1.0 - progress)
    return floor + (base_lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


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
