"""``--backend process|ray`` and the Ray settings, shared by the commands that run many jobs."""

from __future__ import annotations

import argparse
from typing import Any

from ..ray_backend import BACKENDS
from .common import CLIError


def add_backend_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("many jobs at once (Ray; pip install 'hierlens[distributed]')")
    g.add_argument(
        "--backend",
        choices=BACKENDS,
        default="process",
        help="process: one job after another; ray: each job a Ray task",
    )
    g.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join: auto or HOST:PORT (default: a local Ray in this process)",
    )
    g.add_argument("--num-cpus", type=float, default=1, help="CPUs per job (Ray)")
    g.add_argument(
        "--num-gpus", type=float, default=0, help="GPUs per job, fractions allowed (Ray)"
    )


def backend_kwargs(args: argparse.Namespace, backend: bool = True) -> dict[str, Any]:
    """The keyword arguments of the flags; a one-line error when Ray is asked for but missing."""
    if args.backend == "ray":
        from ..ray_backend import MissingExtraError, require_ray

        try:
            require_ray()
        except MissingExtraError as exc:
            raise CLIError(str(exc)) from None
    kw: dict[str, Any] = {
        "address": args.address,
        "num_cpus": args.num_cpus,
        "num_gpus": args.num_gpus,
    }
    if backend:
        kw["backend"] = args.backend
    return kw
