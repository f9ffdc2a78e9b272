"""The SAE and probe stages of the pipeline (shared by trained and pretrained runs)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from hierlens.core.atomic_io import read_json, write_checked_json, write_checked_jsonl
from hierlens.models.run import Run
from hierlens.sae import SAETrainConfig

from .config import PipelineConfig, SAEStage

log = logging.getLogger(__name__)


def build_sae_grid(
    stage: SAEStage, d_in: int, hook: str, device: str | None = None
) -> dict[str, Any]:
    """``{name: untrained SAE}`` for the grid described by ``stage`` (names from
    :func:`hierlens.sae.grid_name`: ``topk_w64_k8``, ``relu_w64_l1c0.01``)."""
    from hierlens.sae import build_sae_grid as sae_grid

    grid, _ = sae_grid(
        stage.architectures,
        d_in,
        stage.widths,
        ks=stage.ks,
        coefficients=stage.coefficients,
        device=device,
        hook_name=hook,
    )
    return grid


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
    path = run.stage_settings_path
    stored = read_json(path).get(stage) if path.exists() else None
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
    path = run.stage_settings_path
    data = read_json(path) if path.exists() else {}
    data[stage] = settings
    write_checked_json(path, data)


def _sae_stage(cfg: PipelineConfig, run_dir: Path, store: Any, progress: bool) -> None:
    from hierlens import sae as S
    from hierlens.sae.heldout import split_evaluation

    if cfg.sae.hook not in store.hooks:
        raise ValueError(f"[sae] hook {cfg.sae.hook!r} was not captured; captured: {store.hooks}")
    acts = store[cfg.sae.hook]
    train_config = sae_train_config(cfg)
    grid = build_sae_grid(cfg.sae, acts.shape[1], cfg.sae.hook, device="cpu")
    run = Run(run_dir)
    saved = run.sae_dirs()
    settings = _stage_settings(cfg.sae)
    if any(name in saved for name in grid):
        check_reused_stage(run, "sae", settings, "saes")
    missing = {name: s for name, s in grid.items() if name not in saved}
    if missing:  # before training, so that SAEs left by an interrupted run are attributed
        record_stage(run, "sae", settings)
    split_fvu: dict[str, dict[str, Any]] = {}
    if missing:
        log.info("training %d SAEs on %s (%s)", len(missing), cfg.sae.hook, train_config.device)
        result = S.train_saes(
            list(missing.values()),
            acts,
            config=train_config,
            progress=progress,
            log_dir=run.trackers("saes").root,
        )
        for name, sae in missing.items():
            sae.save(run.sae_dir(name))
        split_fvu = dict(zip(missing, result.evaluation))
    rows = []
    for name in grid:
        sae = S.load(saved.get(name, run.sae_dir(name)))
        if name not in split_fvu:  # trained by an earlier run of the stage: the same split
            split_fvu[name] = (split_evaluation([sae], acts, train_config) or [{}])[0]
        metrics = S.evaluate_sae(sae, acts)
        dl = S.description_length(sae, acts)  # codes at a 1% FVU-increase precision
        row = {
            "name": name,
            "architecture": type(sae).__name__,
            "d_sae": sae.d_sae,
            "k": getattr(sae.cfg, "k", None),
            **metrics,
            "dead": metrics["dead_fraction"],
            "description_length_bits": dl.bits,
            "bin_width": dl.bin_width,
            **{k: v for k, v in split_fvu[name].items() if k != "sae"},
        }
        rows.append(row)
    write_checked_jsonl(run.sae_table_path, rows)


def _probe_stage(cfg: PipelineConfig, run_dir: Path, store: Any, progress: bool) -> None:
    from hierlens.probes import probe_sweep

    run = Run(run_dir)
    out = run.probe_results_path
    settings = _stage_settings(cfg.probes)
    if out.exists():
        check_reused_stage(run, "probes", settings, "probes/results.jsonl")
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
        selection=cfg.probes.selection,
        out_path=out,
        progress=progress,
    )
