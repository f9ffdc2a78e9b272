"""The fused multi-SAE trainer.

:func:`train_saes` trains a list of SAEs on one stream of activation batches, reading each
batch once. SAEs of the same architecture, shape and discrete hyperparameters (see
:meth:`SAE.stack_key`) are stacked: their tensors get a leading member axis and one batched
forward/backward trains them all, which is what makes sweeps cheap (the many small matmuls
of a Python loop over SAEs become a few large ones, and the per-step overhead is paid once).
Members of a stack never interact: the optimizer step is the one stacked step of
:class:`hierlens.core.optim.StackedAdamW` (gradient clipping per member, AdamW without
weight decay, i.e. Adam, with each member's learning rate), and losses are summed, so each
member follows exactly the trajectory it would follow alone. SAEs with different learning
rates share a stack.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from hierlens.core import distributed as D

from .base import SAE
from .heldout import heldout_evaluation, prepare_rows
from .sources import Source
from .train_config import SAETrainConfig
from .train_stack import TrainState


@dataclasses.dataclass
class SAETrainResult:
    """What :func:`train_saes` returns.

    Attributes:
        saes: the trained SAEs (the same objects that were passed in, updated in place).
        history: one record per SAE per logging step (``step``, ``tokens``, ``sae``,
            ``loss``, ``mse``, ``fvu``, ``l0``, ``dead_fraction``, ``dense_fraction``, ``lr``
            and the architecture's loss terms), averaged over the logging window.
        steps: optimiser steps done in total. tokens: activation rows consumed in total.
        config: the settings the run used (``batch_size`` as capped by the rows).
        evaluation: one record per SAE after training, for a tensor source: ``fvu_train`` on
            its training rows beside ``fvu_heldout`` on the rows held out by
            ``config.heldout_fraction`` (see :func:`hierlens.sae.heldout.heldout_evaluation`).
    """

    saes: list[SAE]
    history: list[dict[str, Any]]
    steps: int
    tokens: int
    config: SAETrainConfig | None = None
    evaluation: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def _validate(saes: Sequence[SAE], config: SAETrainConfig) -> tuple[list[SAE], int]:
    if isinstance(saes, SAE):
        raise TypeError("train_saes takes a list of SAEs; wrap a single SAE as [sae]")
    saes = list(saes)
    if not saes:
        raise ValueError("train_saes needs at least one SAE")
    for s in saes:
        if not isinstance(s, SAE):
            raise TypeError(f"expected hierlens SAEs, got {type(s).__name__}")
    if len({id(s) for s in saes}) != len(saes):
        raise ValueError("the same SAE object appears twice in saes")
    d_ins = {s.d_in for s in saes}
    if len(d_ins) != 1:
        raise ValueError(
            f"all SAEs must read the same activation width, got d_in values {sorted(d_ins)}"
        )
    return saes, d_ins.pop()


def _check_data_parallel(saes: list[SAE], cfg: SAETrainConfig) -> None:
    """A ``ValueError`` unless every rank can take an equal slice of each batch and no SAE
    couples the rows of a batch."""
    world = D.world_size()
    if cfg.batch_size % world:
        raise ValueError(
            f"distribute='data' needs batch_size ({cfg.batch_size}) divisible by the "
            f"{world} processes"
        )
    coupled = sorted({s.name for s in saes if s.name == "batch_topk"})
    if coupled:
        raise ValueError(
            f"distribute='data' cannot split {coupled} SAEs: their top-k runs over the "
            "whole batch; use distribute='saes'"
        )


def _config_of(config: SAETrainConfig | None, fields: dict[str, Any]) -> SAETrainConfig:
    """``config`` with keyword ``fields`` applied (a fresh :class:`SAETrainConfig` without)."""
    if config is not None and not isinstance(config, SAETrainConfig):
        raise TypeError(f"config must be an SAETrainConfig, got {type(config).__name__}")
    valid = {f.name for f in dataclasses.fields(SAETrainConfig)}
    unknown = sorted(set(fields) - valid)
    if unknown:
        raise TypeError(
            f"train_saes got unknown argument(s) {unknown}; SAETrainConfig fields: {sorted(valid)}"
        )
    if isinstance(fields.get("lr"), Sequence):
        fields["lr"] = tuple(fields["lr"])
    if config is None:
        return SAETrainConfig(**fields)
    if "steps" in fields or "tokens" in fields:  # one run length replaces the other
        fields = {"steps": None, "tokens": None, **fields}
    return config.replace(**fields)


def train_saes(
    saes: Sequence[SAE],
    source: Source,
    *,
    config: SAETrainConfig | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    callback: Callable[[list[dict[str, Any]]], None] | None = None,
    distribute: str | None = None,
    log_dir: str | Path | None = None,
    **fields: Any,
) -> SAETrainResult:
    """Train ``saes`` together on one stream of activation batches.

    Args:
        saes: SAEs of any architectures with a common ``d_in``; trained in place.
        source: activations: a tensor ``(n, d_in)``, an iterable of ``(b, d_in)`` tensors
            (an activation store's ``store.batches(...)`` plugs in here), or a callable
            (see :mod:`hierlens.sae.sources`).
        config: the optimisation settings (:class:`SAETrainConfig`: run length, batch size,
            learning rate and schedule, clipping, dead-latent settings, checkpoint cadence,
            seed, device, autocast, compile, fused Adam, sparse TopK steps).
        **fields: :class:`SAETrainConfig` fields given as keywords, applied over ``config``
            (``train_saes(saes, x, steps=100, lr=1e-3)`` builds the config from them).
        checkpoint_dir: write a checkpoint (SAEs in SAELens layout, optimiser and tracker
            state) every ``config.checkpoint_every`` steps and at the end; metrics go to
            ``checkpoint_dir/metrics.jsonl``.
        resume: continue from the latest checkpoint in ``checkpoint_dir`` (exactly: the
            result equals an uninterrupted run for tensor and re-iterable sources).
        progress: tqdm progress bar.
        callback: called with each logging step's records (raising stops training).
        distribute: under ``torchrun`` (see :mod:`hierlens.core.distributed`):
            ``"data"``: every rank computes a disjoint contiguous slice of each batch and the
            gradients are all-reduced (the same result as one process on the same batches;
            ``batch_size`` must divide by the number of processes; rank 0 writes the
            checkpoints); ``"saes"``: the SAEs are dealt out to the ranks (SAE ``i`` to rank
            ``i % world``), each rank trains its own on the same batches (each SAE ends as it
            would trained alone) and checkpoints them under ``checkpoint_dir/part-R-of-W``;
            the trained weights are then broadcast so every rank returns all SAEs. None
            (or a single process): no distribution.
        log_dir: where the trackers of ``config.log_to`` keep their files and run ids
            (default: ``checkpoint_dir/trackers``); each SAE's records are logged as
            ``sae<i>/<metric>`` at their step.

    Returns:
        A :class:`SAETrainResult`; the SAEs are updated in place.

    Raises:
        TypeError / ValueError: bad SAEs, settings or activations, before any step.
    """
    cfg = _config_of(config, fields)
    saes, d_in = _validate(saes, cfg)
    source, heldout, cfg = prepare_rows(source, cfg)  # held-out rows; batch <= rows
    if distribute not in (None, "data", "saes"):
        raise ValueError(f"distribute must be None, 'data' or 'saes', got {distribute!r}")
    if distribute is not None:
        D.init_from_env(cfg.device)
    data_parallel = distribute == "data" and D.is_distributed()
    if distribute == "saes" and D.is_distributed():
        from .distributed import train_grid_parallel

        part_cfg = cfg.replace(heldout_fraction=0.0)  # the rows were split here already
        steps, history = train_grid_parallel(
            train_saes, saes, source, part_cfg, checkpoint_dir, resume, progress, callback, log_dir
        )
        return SAETrainResult(
            saes=saes,
            history=history,
            steps=steps,
            tokens=steps * cfg.batch_size,
            config=cfg,
            evaluation=heldout_evaluation(saes, source, heldout, cfg.seed),
        )
    if data_parallel:
        _check_data_parallel(saes, cfg)
        progress = progress and D.is_main()
    if cfg.checkpoint_every is not None and checkpoint_dir is None:
        raise ValueError("checkpoint_every needs checkpoint_dir")
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir")
    trainer = TrainState(saes, source, cfg, d_in, data_parallel, checkpoint_dir, resume, log_dir)
    bar = tqdm(
        total=cfg.total_steps,
        initial=trainer.step,
        disable=not progress,
        desc="train_saes",
    )
    batches = trainer.stream.batches(trainer.step)
    try:
        while trainer.step < cfg.total_steps:
            try:
                x = next(batches)
            except StopIteration:
                warnings.warn(
                    f"the activation source ran out after {trainer.step} of {cfg.total_steps} "
                    "steps; stopping early",
                    stacklevel=2,
                )
                break
            trainer.train_step(x)
            bar.update(1)
            records = trainer.log_window()
            if records:
                bar.set_postfix(loss=f"{sum(r['loss'] for r in records) / len(records):.4g}")
                if callback is not None:
                    callback(records)
            trainer.checkpoint_if_due()
    finally:
        bar.close()
        trainer.tracker.close()
        for g in trainer.groups:  # also after an exception: the SAEs hold the last completed step
            g.sync_back(saes)
    return SAETrainResult(
        saes=saes,
        history=trainer.history,
        steps=trainer.step,
        tokens=trainer.step * cfg.batch_size,
        config=cfg,
        evaluation=heldout_evaluation(saes, source, heldout, cfg.seed),
    )
