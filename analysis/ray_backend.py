"""Many independent jobs as tasks on a Ray cluster (sweeps, pipeline runs, tracking).

Ray is optional (``pip install 'hierlens[distributed]'``) and imported only here, inside
the functions, so importing hierlens never imports it. :func:`map_tasks` joins a running
cluster (``address="auto"`` or ``"HOST:PORT"``, as started by ``ray start --head``) or,
without an address, starts a local Ray inside this process and stops it at the end. Each
job is one Ray task with its resources (``num_cpus``; ``num_gpus`` may be fractional to
pack small models on one GPU). A job that raises is reported with its error; the others
run on.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger(__name__)

EXTRA_HINT = "the Ray backend needs Ray: pip install 'hierlens[distributed]'"


class MissingExtraError(ImportError):
    """An optional dependency is not installed (the message names the extra)."""


def require_ray():
    """The ``ray`` module, or :class:`MissingExtraError` naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise MissingExtraError(EXTRA_HINT) from None
    return ray


@dataclasses.dataclass
class TaskOutcome:
    """What one job gave: its ``result``, or ``error`` (the exception's text)."""

    key: Any
    result: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def map_tasks(
    fn: Callable[..., Any],
    jobs: Sequence[tuple[Any, tuple]],
    *,
    address: str | None = None,
    num_cpus: float = 1,
    num_gpus: float = 0,
    local_cpus: int | None = None,
) -> list[TaskOutcome]:
    """Run ``fn(*args)`` for every ``(key, args)`` of ``jobs`` as Ray tasks; returns one
    :class:`TaskOutcome` per job, in the order of ``jobs``.

    ``address``: a running cluster (``"auto"`` or ``"HOST:PORT"``); None starts a local
    Ray in this process (``local_cpus`` CPUs, default all) and shuts it down afterwards.
    """
    ray = require_ray()
    if not jobs:
        return []
    started = not ray.is_initialized()
    if started:
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address is not None:
            ray.init(address=address, **kwargs)
        else:
            # "local": a new Ray of this process even where another cluster runs on the host
            ray.init(address="local", num_cpus=local_cpus, **kwargs)
    try:
        remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=0)(fn)
        refs = [remote.remote(*args) for _, args in jobs]
        outcomes = []
        for (key, _), ref in zip(jobs, refs):
            try:
                outcomes.append(TaskOutcome(key, result=ray.get(ref)))
            except Exception as exc:  # a failed job is reported; the others go on
                cause = getattr(exc, "cause", None) or exc
                outcomes.append(TaskOutcome(key, error=f"{type(cause).__name__}: {cause}"))
                log.error("job %s failed: %s", key, outcomes[-1].error)
        return outcomes
    finally:
        if started:
            ray.shutdown()
