"""Capture activations of a run's checkpoints into its run directory.

Each checkpoint gets its own store, ``run_dir/activations/step_NNNNNNN/`` (shards per hook and
``manifest.json``; :meth:`hierlens.models.Run.activations_dir`), identified by the run and the checksum of the checkpoint's weights, so
re-running resumes unfinished captures and refuses to mix in a different model.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .capture import capture
from .run import Run, open_run
from .run_lock import locks_run
from .store import ActivationStore


def activations_dir(run_dir: str | os.PathLike, step: int) -> Path:
    """``run_dir/activations/step_NNNNNNN`` (:meth:`Run.activations_dir`)."""
    return Run(run_dir).activations_dir(step)


@locks_run("run_dir")
def capture_checkpoints(
    run_dir: str | os.PathLike | Run,
    hooks: str | Sequence[str],
    *,
    steps: Sequence[int] | None = None,
    data: Any = None,
    split: str = "test_id",
    n: int = 1000,
    seed: int = 0,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    overwrite: bool = False,
    progress: bool = True,
    **capture_kwargs: Any,
) -> dict[int, ActivationStore]:
    """Capture ``hooks`` at each checkpoint ``steps`` (default: all) of a run.

    ``data`` defaults to the run's examples (:meth:`Run.examples`: ``n`` examples of the
    task's ``split`` drawn with ``seed``, or a pretrained run's corpus sentences; their
    per-token labels go into each store); any ``data`` accepted by
    :func:`~hierlens.models.capture.capture` works. Every step uses the same data. Other
    keyword arguments go to ``capture``. Returns ``{step: store}``. Holds the run's writer
    lock (:meth:`Run.lock`).
    """
    run = open_run(run_dir)
    available = run.steps
    steps = list(available if steps is None else steps)
    missing = [s for s in steps if s not in available]
    if not steps or missing:
        raise ValueError(
            f"{run.path}: no checkpoint at step(s) {missing or steps}; available: {available}"
        )
    if data is None:
        data = run.examples(split, n, seed)
    stores = {}
    for step in steps:
        model_id = run.model_id(step)
        model = run.load_model(step, device=device)
        stores[step] = capture(
            model,
            data,
            hooks,
            batch_size=batch_size,
            out_dir=run.activations_dir(step),
            model_id=model_id,
            device=device,
            overwrite=overwrite,
            progress=progress,
            **capture_kwargs,
        )
    return stores
