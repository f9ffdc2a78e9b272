"""The SAE and probe stages of the pipeline (shared by trained and pretrained runs)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hierlens.core.checksums import is_committed
from hierlens.models.run import Run
from hierlens.sae import SAETrainConfig

from .config import PipelineConfig

log = logging.getLogger(__name__)


def sae_train_config(cfg: PipelineConfig) -> SAETrainConfig:
    """The SAE stage's training settings, on the pipeline's ``[train] device`` unless the
    ``[sae]`` table names its own."""
    train = cfg.sae.train
    return train if train.device is not None else train.replace(device=cfg.train.device)


def _sae_stage(cfg: PipelineConfig, run_dir: Path, store: Any, progress: bool) -> None:
    from hierlens import sae as S

    if cfg.sae.hook not in store.hooks:
        raise ValueError(f"[sae] hook {cfg.sae.hook!r} was not captured; captured: {store.hooks}")
    acts = store[cfg.sae.hook]
    train_config = sae_train_config(cfg)
    run = Run(run_dir)
    # folders holding a completely saved SAE (a save cut short is trained and saved again)
    saved = {name: path for name, path in run.sae_dirs().items() if S.is_saved(path)}
    log.info("SAE grid on %s (%s)", cfg.sae.hook, train_config.device)
    S.train_sae_grid(
        cfg.sae,
        acts,
        train_config,
        device="cpu",
        save_dir=lambda name: saved.get(name, run.sae_dir(name)),
        resume=True,
        table=lambda saes: S.grid_table(saes, acts),
        table_path=run.sae_table_path,
        progress=progress,
        log_dir=run.trackers("saes").root,
        hook_name=cfg.sae.hook,
    )


def _probe_stage(cfg: PipelineConfig, run_dir: Path, store: Any, progress: bool) -> None:
    from hierlens.probes import probe_sweep

    out = Run(run_dir).probe_results_path
    if is_committed(out):  # a complete, intact result: a rerun keeps it
        return
    names = list(cfg.probes.labels) or sorted(store.labels)
    missing = [n for n in names if n not in store.labels]
    if missing:
        raise ValueError(
            f"[probes] unknown label(s) {missing}; the task provides {sorted(store.labels)}"
        )
    width = min(store[h].shape[1] for h in store.hooks)
    probe_sweep(
        {h: store[h] for h in store.hooks},
        {n: store.labels[n].numpy() for n in names},
        ks=[k for k in cfg.probes.ks if k <= width],
        selection=list(cfg.probes.selection),
        out_path=out,
        progress=progress,
    )


def causal_stage(cfg: PipelineConfig, run_dir: Path, model: Any, task: Any, progress: bool) -> None:
    """Patching and DAS (``[causal]``) of the final model, written to ``causal/``."""
    from hierlens.core.atomic_io import write_checked_json, write_checked_jsonl
    from hierlens.models.tasks.variables import list_causal_tasks

    from ..causal.sweep import causal_sweep

    if task.name not in list_causal_tasks():
        log.info("[causal] skipped: the %s task has no causal model", task.name)
        return
    stage = cfg.causal
    run = Run(run_dir)
    if is_committed(run.patching_path) and is_committed(run.das_path):  # complete, intact
        log.info("[causal] already done (%s); skipped", run.causal_dir)
        return
    model.eval()
    result = causal_sweep(
        model, task, list(stage.variables) or None, list(stage.hooks) or None,
        patch=stage.patch, das=stage.das, progress=progress,
    )  # fmt: skip
    write_checked_json(run.patching_path, {"config": stage.patch.to_dict(), **result})
    write_checked_jsonl(run.das_path, result["das"])
