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
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

from hierlens.core.validate import check_choice

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


#: where the jobs of a sweep, a tracking run or an SAE grid run: in this process, or on Ray
BACKENDS = ("process", "ray")


def check_backend(backend: str) -> None:
    """Reject a ``backend`` not in :data:`BACKENDS` (ValueError), and ``"ray"`` without Ray
    installed (:class:`MissingExtraError`), before any work."""
    check_choice("backend", backend, BACKENDS)
    if backend == "ray":
        require_ray()


@dataclasses.dataclass
class TaskOutcome:
    """What one job gave: its ``result``, or ``error`` (the exception's text)."""

    key: Any
    result: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


#: seconds to wait for a Ray cluster's address to accept a connection
CONNECT_TIMEOUT_S = 10.0


class RayConnectError(ValueError):
    """No Ray cluster could be joined at the address given (``--address``)."""


def connect(ray: Any, address: str, **kwargs: Any) -> None:
    """``ray.init(address=...)``, after checking within :data:`CONNECT_TIMEOUT_S` that
    ``HOST:PORT`` accepts a connection (Ray itself retries a wrong address for minutes); any
    failure is a :class:`RayConnectError` naming the address and the ``--address`` flag."""
    host, sep, port = address.rpartition(":")
    if address != "auto" and sep and port.isdigit():
        host = host.removeprefix("ray://")
        try:
            socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
        except OSError as exc:
            raise RayConnectError(
                f"--address {address}: no Ray cluster accepts connections there ({exc}); "
                "give the head's address as `ray start --head` printed it"
            ) from None
    try:
        ray.init(address=address, **kwargs)
    except Exception as exc:  # Ray's own error types vary by version and by failure
        raise RayConnectError(
            f"--address {address}: cannot join the Ray cluster ({type(exc).__name__}: {exc})"
        ) from None


# The reaper: a small process that watches this one. While it lives, it notes every process
# descending from it (the local Ray's servers and agents); if this process dies without
# stopping Ray (a SIGKILL), it kills those it noted (checked by start time, so a reused pid
# is never hit), so no Ray process outlives the run. Linux only (it reads /proc).
_REAPER = r"""
import os, signal, sys, time
driver = int(sys.argv[1])
def table():
    out = {}
    for e in os.listdir("/proc"):
        if e.isdigit():
            try:
                with open(f"/proc/{e}/stat") as f:
                    rest = f.read().rsplit(")", 1)[1].split()
                out[int(e)] = (int(rest[1]), rest[19])
            except (OSError, IndexError, ValueError):
                pass
    return out
known = {}
while True:
    t = table()
    if driver not in t:
        break
    kids, todo = {}, [driver]
    while todo:
        p = todo.pop()
        for q, (pp, start) in t.items():
            if pp == p and q not in kids and q != os.getpid():
                kids[q] = start
                todo.append(q)
    known.update(kids)
    time.sleep(1.0)
t = table()
for pid, start in known.items():
    if pid in t and t[pid][1] == start:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
"""


def _start_reaper() -> subprocess.Popen | None:
    """Start the reaper (see :data:`_REAPER`) for this process; None where there is no
    ``/proc``."""
    if not os.path.isdir("/proc/self"):
        return None
    return subprocess.Popen(
        [sys.executable, "-c", _REAPER, str(os.getpid())],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


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
            connect(ray, address, **kwargs)
        else:
            # "local": a new Ray of this process even where another cluster runs on the host
            ray.init(address="local", num_cpus=local_cpus, **kwargs)
    reaper = _start_reaper() if started and address is None else None
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
        if reaper is not None:  # Ray stopped cleanly: nothing left to reap
            reaper.kill()
            reaper.wait()
