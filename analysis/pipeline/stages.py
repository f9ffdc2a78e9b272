"""The SAE and probe stages of the pipeline (shared by trained and pretrained runs)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from hierlens.core.atomic_io import read_json, write_checked_json
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


# settings that change how a stage runs, not what it computes
_RUNTIME = ("enabled", "device", "compile", "fused", "sparse_decode", "log_every", "log_to")
_RUNTIME += ("checkpoint_every",)


def _stage_settings(section: Any) -> dict[str, Any]:
    out = json.loads(json.dumps(section.to_dict()))
    return {k: v for k, v in out.items() if k not in _RUNTIME}


def check_reused_stage(run: Run, stage: str, settings: dict[str, Any], outputs: str) -> None:
    """Refuse to reuse a stage's existing results (``outputs``, a path in the run) that were
    made with other ``settings`` than the config's ``[stage]`` table: the pipeline skips work
    whose results exist, so other settings would be silently ignored. Results whose settings
    were not recorded (older runs) are reused as they are."""
    stored = read_stage_settings(run).get(stage)
    if stored is None or stored == settings:
        return
    diffs = [
        f"{k}: {stored.get(k)!r} -> {settings.get(k)!r}"
        for k in sorted(set(stored) | set(settings))
        if stored.get(k) != settings.get(k)
    ]
    raise ValueError(
        f"[{stage}] differs from the settings that made {run.path / outputs} "
        f"({'; '.join(diffs)}); the pipeline reuses results that exist, so these settings "
        f"would not apply: delete {run.path / outputs} to recompute with them, or choose "
        "another name or out_dir"
    )


def record_stage(run: Run, stage: str, settings: dict[str, Any]) -> None:
    """Store the settings a stage computes its results with (see
    :func:`check_reused_stage`), before it writes them: results an interrupted stage left
    are then known to come from these settings."""
    data = read_stage_settings(run)
    data[stage] = settings
    with run.confined():
        write_checked_json(run.stage_settings_path, data)


def read_stage_settings(run: Run) -> dict[str, Any]:
    """The stored settings of the run's pipeline stages (``pipeline_stages.json``, checked
    against its checksum), ``{}`` when none are stored."""
    path = run.stage_settings_path
    if not run.has(path):
        return {}
    with run.confined():
        data = read_json(path)
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError(f"{path}: expected an object of stage settings")
    return data


def _sae_stage(cfg: PipelineConfig, run_dir: Path, store: Any, progress: bool) -> None:
    from hierlens import sae as S

    if cfg.sae.hook not in store.hooks:
        raise ValueError(f"[sae] hook {cfg.sae.hook!r} was not captured; captured: {store.hooks}")
    acts = store[cfg.sae.hook]
    train_config = sae_train_config(cfg)
    run = Run(run_dir)
    settings = _stage_settings(cfg.sae)
    if run.sae_dirs():  # SAEs in the run: made with the stored [sae] settings, if any were stored
        check_reused_stage(run, "sae", settings, "saes")
    else:  # before training, so that SAEs left by an interrupted run are attributed
        record_stage(run, "sae", settings)
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

    run = Run(run_dir)
    out = run.probe_results_path
    settings = _stage_settings(cfg.probes)
    if run.has(out):  # results in the run: made with the stored [probes] settings
        check_reused_stage(run, "probes", settings, "probes/results.jsonl")
    if is_committed(out):  # a complete, intact result: a rerun keeps it
        return
    names = list(cfg.probes.labels) or sorted(store.labels)
    missing = [n for n in names if n not in store.labels]
    if missing:
        raise ValueError(
            f"[probes] unknown label(s) {missing}; the task provides {sorted(store.labels)}"
        )
    record_stage(run, "probes", settings)
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
    settings = _stage_settings(stage)
    if run.has(run.patching_path) or run.has(run.das_path):
        check_reused_stage(run, "causal", settings, "causal")
    if is_committed(run.patching_path) and is_committed(run.das_path):  # complete, intact
        log.info("[causal] already done (%s); skipped", run.causal_dir)
        return
    record_stage(run, "causal", settings)
    model.eval()
    result = causal_sweep(
        model, task, list(stage.variables) or None, list(stage.hooks) or None,
        patch=stage.patch, das=stage.das, progress=progress,
    )  # fmt: skip
    write_checked_json(run.patching_path, {"config": stage.patch.to_dict(), **result})
    write_checked_jsonl(run.das_path, result["das"])
