"""What the ``hierlens`` commands share: the user-error type, list and task-parameter parsers,
and metric formatting."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any


class CLIError(Exception):
    """A user error: reported as one line, exit status 2."""


def coerce(text: str, default: Any) -> Any:
    """Parse a ``--task-param`` value with the type of the parameter's default."""
    if isinstance(default, bool):
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected true/false, got {text!r}")
    if isinstance(default, int):
        return int(text)
    if isinstance(default, float):
        return float(text)
    if isinstance(default, str):
        return text
    return json.loads(text)


def task_from_args(name: str, params: Sequence[str]) -> Any:
    from hierlens.models.tasks import get_task, task_class

    cls = task_class(name)
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for item in params:
        if "=" not in item:
            raise CLIError(f"--task-param expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        if key not in defaults:
            raise CLIError(
                f"task {name!r} has no parameter {key!r}; parameters: {', '.join(defaults)}"
            )
        try:
            kwargs[key] = coerce(value, defaults[key])
        except ValueError as exc:
            raise CLIError(f"--task-param {key}: {exc}") from exc
    return get_task(name, **kwargs)


def ints(text: str) -> list[int]:
    """Parse ``"1,2,4"`` into ``[1, 2, 4]`` (an argparse ``type``)."""
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def fmt(metrics: dict[str, float]) -> str:
    """``k=v`` pairs, floats to 4 decimals."""
    return ", ".join(
        f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()
    )


def newest_step(run_dir: str | os.PathLike) -> int:
    """The newest checkpoint step of ``run_dir``; a :class:`CLIError` when it has none."""
    from hierlens.models.run import open_run

    steps = open_run(run_dir).steps
    if not steps:
        raise CLIError(
            f"{run_dir}: the run has no checkpoints yet; train it first (hierlens train)"
        )
    return steps[-1]
