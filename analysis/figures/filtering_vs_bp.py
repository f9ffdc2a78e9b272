"""The experiment behind ``filtering-vs-bp`` (shared by
``examples/hierarchical_filtering_vs_bp.py`` and ``hierlens reproduce``): root accuracy of a
bidirectional transformer vs exact belief propagation per filtering level (Garnier-Brun,
Mézard, Moscato & Saglietti 2025). Returns the JSON-serialisable data that
:func:`hierlens.analysis.figures.plot.plot_filtering_vs_bp` draws.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from hierlens.core.device import resolve_device
from hierlens.models import TrainConfig
from hierlens.models.tasks.registry import get_task
from hierlens.models.train_many import train_many
from hierlens.models.transformer import ModelConfig, build_transformer


def filtering_vs_bp(
    filter_levels: Sequence[int] = (0, 1, 2, 3, 4),
    *,
    q: int = 4,
    depth: int = 4,
    steps: int = 1000,
    n_eval: int = 2000,
    d_model: int = 64,
    n_layers: int = 4,
    batch_size: int = 128,
    train_pool: int = 60_000,
    run_dir: str | os.PathLike = "runs/filtering_vs_bp",
    resume: bool = True,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Root classification on the hierarchical filtering model with a bidirectional
    transformer vs the Bayes-optimal accuracy of exact belief propagation on the same
    held-out sequences, per filtering level k (Garnier-Brun et al. 2025).

    Trains one model per level into ``run_dir/k{level}``, all levels as one fused stack
    (:func:`~hierlens.models.train_many`; ``resume``: continue or reuse a
    finished run there; else replace it). Returns ``q``, ``depth``, ``steps``, ``n_eval``,
    ``filter_levels`` and, per level in that order, ``model_acc`` and ``bp_acc``.
    """
    levels = [int(k) for k in filter_levels]
    if not levels or any(k < 0 or k > depth for k in levels):
        raise ValueError(f"filter_levels must be a non-empty list in [0, {depth}], got {levels}")
    dev = resolve_device(device)
    tasks = [
        get_task("hierarchical_filtering", q=q, depth=depth, filter_level=level, subtask="root")
        for level in levels
    ]
    config = TrainConfig(
        steps=steps,
        batch_size=batch_size,
        lr=1e-3,
        warmup_steps=min(50, steps),
        eval_every=0,
        checkpoint_every=steps,
        train_pool=train_pool,
        device=str(dev),
    )
    model_configs = [
        ModelConfig.for_task(task, d_model=d_model, n_layers=n_layers, n_heads=4) for task in tasks
    ]
    models = [build_transformer(mc, device=dev) for mc in model_configs]
    # one model per level, all of one shape: trained as one stack
    results = train_many(
        models,
        tasks,
        config,
        [Path(run_dir) / f"k{level}" for level in levels],
        model_configs=model_configs,
        resume=resume,
        overwrite=not resume,
        progress=progress,
    )
    for level, result in zip(levels, results, strict=True):
        if result.stopped:
            raise RuntimeError(f"filtering level {level}: {result.stopped}")
    model_acc, bp_acc = [], []
    for task, model in zip(tasks, models, strict=True):
        examples = task.sample(n_eval, "test_id", seed=99)
        model_acc.append(task.evaluate(model, examples=examples, device=dev)["root_acc"])
        bp_acc.append(float(task.bp_accuracy(examples=examples)))
    return {
        "q": q,
        "depth": depth,
        "steps": steps,
        "n_eval": n_eval,
        "filter_levels": levels,
        "model_acc": model_acc,
        "bp_acc": bp_acc,
    }
