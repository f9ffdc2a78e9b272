"""The L0 frontier of a run's own SAEs: every registered architecture across sparsities,
trained on a hook of one checkpoint as one fused grid, scored against the task's known
features and written where the report and other SAE tools read it.

:func:`fit_sae_frontier` captures the hook (reusing a complete store), trains the members of
the :class:`~hierlens.sae.FrontierSpec` that are not saved yet as one fused
:func:`~hierlens.sae.train_frontier` call on the first ``1 - eval_fraction`` of the
sequences (``backend="ray"``: one Ray task per hook, through
:func:`~hierlens.analysis.ray_backend.map_tasks`), saves each SAE as
``<member>__<hook>__step<step>`` (:func:`~hierlens.analysis.sae_grid.grid_sae_name`), then
scores every member on the held-out sequences: FVU and L0, spliced CE on the task's targets,
and, for a task with known latents
(:class:`~hierlens.models.tasks.ground_truth.KnownLatents`), MCC, F1, uniqueness and
absorption per tree level against its per-token ground truth. The records go to
``saes/frontier.json`` (:attr:`Run.sae_frontier_path`) and each SAE's core and
ground-truth evaluations to ``saes/saebench/`` in SAEBench's layout.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import torch

from hierlens.core.atomic_io import write_checked_json
from hierlens.models.checkpoint_capture import capture_checkpoints
from hierlens.models.run import open_run
from hierlens.models.run_lock import locks_run
from hierlens.models.store import ActivationStore
from hierlens.models.tasks.base import pad_examples
from hierlens.models.tasks.ground_truth import KnownLatents, store_rows
from hierlens.sae import (
    FrontierSpec,
    SAETrainConfig,
    frontier_records,
    frontier_saes,
    ground_truth_recovery,
    load_sae,
    spliced_ce,
)
from hierlens.sae.saebench import core_result, ground_truth_result, write_results

from .ray_backend import check_backend
from .sae_grid import checked_hooks, grid_sae_name, missing_members, train_members

log = logging.getLogger(__name__)

__all__ = ["fit_sae_frontier", "train_frontier_hook"]


def _split_rows(store: ActivationStore, eval_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices of the training and the held-out sequences (the last ``eval_fraction``
    of the sequences are held out)."""
    seq = store.index["sequence"]
    n_seq = int(seq.max()) + 1
    cut = n_seq - max(1, round(eval_fraction * n_seq))
    if cut < 1:
        raise ValueError(f"eval_fraction={eval_fraction} leaves no training sequence")
    held = seq >= cut
    return (~held).nonzero().squeeze(1), held.nonzero().squeeze(1)


def train_frontier_hook(
    run_dir: str | os.PathLike,
    step: int,
    hook: str,
    spec: dict[str, Any],
    members: Sequence[str],
    config: SAETrainConfig,
    eval_fraction: float,
) -> list[str]:
    """Train the frontier ``members`` of ``spec`` (:class:`FrontierSpec` fields) on the
    training sequences of ``hook`` at checkpoint ``step`` with
    :func:`~hierlens.sae.train_sae_grid`, saving each; returns the saved names. What each
    Ray task of :func:`fit_sae_frontier` runs."""
    run = open_run(run_dir)
    with run.confined():  # a Ray worker holds no lock: access is confined all the same
        return _train_hook(run, step, hook, spec, members, config, eval_fraction)


def _train_hook(run, step, hook, spec, members, config, eval_fraction) -> list[str]:
    store = ActivationStore.open(run.activations_dir(step))
    train_rows, _ = _split_rows(store, eval_fraction)
    acts = store[hook][train_rows]
    return train_members(run, step, hook, FrontierSpec.from_dict(spec), acts, members, config)


@locks_run("run_dir")
def fit_sae_frontier(
    run_dir: str | os.PathLike,
    hooks: Sequence[str],
    step: int | None = None,
    *,
    spec: FrontierSpec,
    config: SAETrainConfig,
    split: str = "test_id",
    n: int = 1000,
    seed: int = 0,
    eval_fraction: float = 0.2,
    device: str | torch.device | None = None,
    backend: str = "process",
    address: str | None = None,
    num_cpus: float = 1,
    num_gpus: float = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Train and score the L0 frontier on ``hooks`` at checkpoint ``step`` (default: the
    newest) of a run (see the module docstring).

    Activations are captured from ``n`` examples of ``split`` drawn with ``seed``; the last
    ``eval_fraction`` of them are held out for scoring. Returns (and writes to
    ``saes/frontier.json``) ``{"step", "spec", "hooks", "records"}``; each record is
    :func:`~hierlens.sae.frontier_records`' plus ``hook`` and ``sae`` (the saved name).

    Raises:
        ValueError: bad hooks, backend or fraction, before any capture or training.
    """
    if not isinstance(spec, FrontierSpec):
        raise TypeError(f"spec must be a FrontierSpec, got {type(spec).__name__}")
    check_backend(backend)
    if not 0.0 < float(eval_fraction) < 1.0:
        raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction!r}")
    hooks = checked_hooks(hooks)
    run = open_run(run_dir)
    if step is None:
        if not run.steps:
            raise ValueError(f"{run.path}: the run has no checkpoint")
        step = run.steps[-1]
    members = list(frontier_saes(spec, 1, device="cpu")[0])
    capture_checkpoints(
        run, hooks, steps=[step], split=split, n=n, seed=seed, device=device, progress=progress
    )
    pending = []
    for hook in hooks:
        missing = missing_members(run, members, hook, step)
        if missing:
            args = (str(run.path), step, hook, spec.to_dict(), missing, config, eval_fraction)
            pending.append((hook, args))
    if backend == "ray":
        from .ray_backend import map_tasks

        failed = {
            o.key: o.error
            for o in map_tasks(
                train_frontier_hook,
                pending,
                address=address,
                num_cpus=num_cpus,
                num_gpus=num_gpus,
            )  # fmt: skip
            if not o.ok
        }
        if failed:
            raise RuntimeError(f"frontier training failed on {failed}")
    else:
        for hook, args in pending:
            log.info("SAE frontier on %s at step %d: %d SAE(s)", hook, step, len(args[4]))
            train_frontier_hook(*args)
    return _score(run, step, hooks, spec, members, split, n, seed, eval_fraction, device)


def _score(run, step, hooks, spec, members, split, n, seed, eval_fraction, device):
    store = ActivationStore.open(run.activations_dir(step))
    examples = run.examples(split, n, seed)
    _, held = _split_rows(store, eval_fraction)
    task = None if run.is_pretrained else run.task
    truth = None
    if isinstance(task, KnownLatents):
        full = task.ground_truth(examples)
        lengths = [len(e.tokens) for e in examples]
        rows = store_rows(lengths, store.index["sequence"], store.index["position"])
        truth = full.select(rows[held])
    first = int(store.index["sequence"][held].min())
    batch = pad_examples(examples[first:], getattr(task, "pad_id", 0))
    model = run.load_model(step, device=device)
    records = []
    results = []
    for hook in hooks:
        acts = store[hook][held]
        saes = {m: load_sae(run.sae_dir(grid_sae_name(m, hook, step)), device=device,
                            verify=True) for m in members}  # fmt: skip
        cache: dict[int, dict[str, Any]] = {}

        def spliced(sae: Any, hook: str = hook, cache: dict = cache) -> dict[str, Any]:
            cache[id(sae)] = spliced_ce(
                model, sae, batch.tokens, hook, targets=batch.targets,
                attention_mask=batch.attention_mask,
            )  # fmt: skip
            return cache[id(sae)]

        for rec in frontier_records(saes, acts, truth, spliced=spliced, seed=seed):
            sae = saes[rec["name"]]
            name = grid_sae_name(rec["name"], hook, step)
            rec.update(sae=name, hook=hook)
            records.append(rec)
            release = f"{run.path.name}_step{step}_{hook}"
            results.append(core_result(sae, acts, release=release, sae_id=rec["name"],
                                       spliced=cache[id(sae)]))  # fmt: skip
            if truth is not None:
                with torch.no_grad():
                    codes = sae.encode(acts.to(sae.device)).cpu()
                rec_gt = ground_truth_recovery(codes, truth, seed=seed)
                results.append(ground_truth_result(sae, rec_gt, release=release,
                                                   sae_id=rec["name"]))  # fmt: skip
    out = {"step": step, "spec": spec.to_dict(), "hooks": hooks, "records": records,
           "ground_truth": truth is not None}  # fmt: skip
    write_checked_json(run.sae_frontier_path, out)
    write_results(run.saebench_dir, results)
    return out
