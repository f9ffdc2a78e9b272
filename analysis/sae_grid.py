"""SAE grids over many hooks and checkpoints of a run, one fused grid per (checkpoint, hook).

``fit_sae_grid`` captures the hooks at the checkpoints (reusing complete stores), then trains
for every (step, hook) pair the grid members that are not saved yet, as one fused
:func:`~hierlens.sae.train_saes` call, and saves each SAE in the run's SAE folder as
``<member>__<hook>__step<step>`` (:func:`grid_sae_name`, the member named by
:func:`~hierlens.sae.grid_name`). With ``backend="ray"`` every pair is one Ray task (see
:mod:`hierlens.analysis.ray_backend`); a rerun trains only the SAEs still missing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from hierlens.models.checkpoint_capture import capture_checkpoints
from hierlens.models.run import Run, open_run
from hierlens.models.run_lock import locks_run
from hierlens.models.store import ActivationStore
from hierlens.sae import SAEGridConfig, SAETrainConfig, is_saved, train_sae_grid

from .ray_backend import check_backend

log = logging.getLogger(__name__)

__all__ = ["SAEGridFailed", "fit_sae_grid", "grid_sae_name", "train_grid_pair"]


def grid_sae_name(member: str, hook: str, step: int) -> str:
    """The saved name of grid member ``member`` trained on ``hook`` at checkpoint ``step``:
    ``grid_sae_name("topk_w64_k8", "blocks.0.hook_resid_post", 500) ==
    "topk_w64_k8__blocks.0.hook_resid_post__step500"``."""
    return f"{member}__{hook}__step{step}"


class SAEGridFailed(RuntimeError):
    """Some (step, hook) grids failed; ``saved`` maps the SAEs that exist to their folders,
    ``failed`` maps each failed ``(step, hook)`` to its error."""

    def __init__(self, saved: dict[str, Path], failed: dict[tuple[int, str], str]) -> None:
        self.saved = saved
        self.failed = failed
        text = "; ".join(f"step {s} {h}: {e}" for (s, h), e in failed.items())
        super().__init__(f"{len(failed)} SAE grid(s) failed: {text}")


def train_grid_pair(
    run_dir: str | os.PathLike,
    step: int,
    hook: str,
    grid: dict[str, Any],
    members: Sequence[str],
    config: SAETrainConfig,
) -> list[str]:
    """Train the grid ``members`` (names from :func:`~hierlens.sae.grid_name`) of the grid
    ``grid`` (:class:`~hierlens.sae.SAEGridConfig` fields) on ``hook`` at checkpoint ``step``
    with :func:`~hierlens.sae.train_sae_grid`, saving each; returns the saved names. What
    each Ray task of :func:`fit_sae_grid` runs."""
    run = open_run(run_dir)
    with run.confined():  # a Ray worker holds no lock: access is confined all the same
        return _train_pair(run, step, hook, grid, members, config)


def _train_pair(run, step, hook, grid, members, config) -> list[str]:
    acts = ActivationStore.open(run.activations_dir(step))[hook]
    grid = SAEGridConfig.from_dict(grid)
    return train_members(run, step, hook, grid, acts, members, config, seed=config.seed)


def train_members(
    run: Run,
    step: int,
    hook: str,
    grid: Any,
    acts: torch.Tensor,
    members: Sequence[str],
    config: SAETrainConfig,
    **kwargs: Any,
) -> list[str]:
    """Train the ``members`` of ``grid`` (an :class:`~hierlens.sae.SAEGridConfig` or a
    :class:`~hierlens.sae.FrontierSpec`) on ``acts`` of ``hook`` at checkpoint ``step`` as
    one :func:`~hierlens.sae.train_sae_grid` call (``kwargs`` passed on), saving each in the
    run as :func:`grid_sae_name`; returns the saved names."""
    fit = train_sae_grid(
        grid,
        acts,
        config,
        save_dir=lambda member: run.sae_dir(grid_sae_name(member, hook, step)),
        members=members,
        progress=False,
        hook_name=hook,
        **kwargs,
    )
    return [grid_sae_name(member, hook, step) for member in fit.trained]


def missing_members(run: Run, members: Sequence[str], hook: str, step: int) -> list[str]:
    """The ``members`` not yet saved in the run for ``hook`` at checkpoint ``step``."""
    return [m for m in members if not is_saved(run.sae_dir(grid_sae_name(m, hook, step)))]


def checked_hooks(hooks: Sequence[str]) -> list[str]:
    """``hooks`` as a list; ValueError when empty or when a name repeats."""
    hooks = list(hooks)
    if not hooks or len(set(hooks)) != len(hooks):
        raise ValueError(f"hooks must be distinct hook names, got {hooks}")
    return hooks


@locks_run("run_dir")
def fit_sae_grid(
    run_dir: str | os.PathLike,
    hooks: Sequence[str],
    steps: Sequence[int] | None = None,
    *,
    architectures: Sequence[str] = ("topk",),
    widths: Sequence[int],
    ks: Sequence[int] | None = None,
    coefficients: Sequence[float] | None = None,
    config: SAETrainConfig,
    split: str = "test_id",
    n: int = 1000,
    seed: int = 0,
    device: str | torch.device | None = None,
    backend: str = "process",
    address: str | None = None,
    num_cpus: float = 1,
    num_gpus: float = 0,
    progress: bool = True,
) -> dict[str, Path]:
    """Train the SAE grid (``architectures`` x ``widths`` x ``ks`` / ``coefficients``, as
    :class:`~hierlens.sae.SAEGridConfig`) on every hook of ``hooks`` (exact names) at every
    checkpoint ``steps`` (default: all) of a run; returns ``{saved name: folder}`` of the
    whole grid.

    Activations are captured with ``split``, ``n``, ``seed`` on ``device`` (a complete store
    of the same data is reused). Each (step, hook) pair's missing members train as one fused
    run with ``config`` (each SAE's weights are those of training it alone, so a rerun that
    trains only the missing ones gives the same SAEs). ``backend="ray"``: each pair is one
    Ray task (``num_cpus`` / ``num_gpus``) on the cluster at ``address`` (None: a local Ray
    started in this process); the tasks write their SAEs into the run while this process
    holds its lock, so the run folder must be shared with the cluster's workers. Pairs that
    fail are reported and the others finish; then :class:`SAEGridFailed` names them.
    """
    check_backend(backend)
    hooks = checked_hooks(hooks)
    grid = SAEGridConfig(
        widths=list(widths),
        architectures=list(architectures),
        ks=list(ks or ()),
        coefficients=list(coefficients or ()),
    )
    members = list(grid.build(1, device="cpu")[0])  # the member names
    spec = grid.to_dict()
    run = open_run(run_dir)
    steps = list(run.steps if steps is None else steps)
    pending: list[tuple[tuple[int, str], tuple]] = []
    for step in steps:
        for hook in hooks:
            missing = missing_members(run, members, hook, step)
            if missing:
                pending.append(((step, hook), (str(run.path), step, hook, spec, missing, config)))
    needed = sorted({key[0] for key, _ in pending})
    if needed:
        capture_checkpoints(
            run, hooks, steps=needed, split=split, n=n, seed=seed, device=device, progress=progress
        )
    failed: dict[tuple[int, str], str] = {}
    if backend == "ray":
        from .ray_backend import map_tasks

        log.info("SAE grid: %d (step, hook) grid(s) to train on Ray", len(pending))
        for o in map_tasks(
            train_grid_pair, pending, address=address, num_cpus=num_cpus, num_gpus=num_gpus
        ):
            if not o.ok:
                failed[o.key] = o.error
    else:
        for key, args in pending:
            log.info("SAE grid at step %d on %s: %d SAE(s)", key[0], key[1], len(args[4]))
            try:
                train_grid_pair(*args)
            except Exception as exc:  # reported like a failed Ray task; the others go on
                failed[key] = f"{type(exc).__name__}: {exc}"
                log.error("SAE grid at step %d on %s failed: %s", key[0], key[1], failed[key])
    saved = {}
    for step in steps:
        for hook in hooks:
            for m in members:
                path = run.sae_dir(grid_sae_name(m, hook, step))
                if is_saved(path):
                    saved[path.name] = path
    if failed:
        raise SAEGridFailed(saved, failed)
    return saved
