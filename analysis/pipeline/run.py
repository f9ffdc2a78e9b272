"""Running the pipeline: the stages in order, under the run's writer lock."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hierlens.models import get_task
from hierlens.models.checkpoint_capture import capture_checkpoints
from hierlens.models.run import Run, open_run
from hierlens.models.train import TrainingDiverged, train
from hierlens.models.train_many import train_many
from hierlens.models.transformer import ModelConfig, build_transformer

from .config import PipelineConfig, load_config
from .stages import _probe_stage, _sae_stage

log = logging.getLogger(__name__)


def _run_pretrained(cfg: PipelineConfig, progress: bool) -> Path:
    """The pipeline on a pretrained model: capture -> SAEs -> probes -> tree projections per
    layer -> structural probes -> report."""
    from hierlens.models.pretrained_run import PretrainedRunConflict, open_pretrained_run

    run_dir = Path(cfg.out_dir) / cfg.name
    data = dict(cfg.data)
    try:
        run = open_pretrained_run(
            run_dir,
            cfg.model["pretrained"],
            data["treebank"],
            format=data.get("format"),
            drop_punct=data.get("drop_punct"),
            special_tokens=cfg.model.get("special_tokens"),
        )
    except PretrainedRunConflict as exc:
        raise ValueError(f"{exc}; or another name or out_dir in the pipeline config") from None
    device = cfg.train.device
    _check_hooks(cfg, run.load_model(device=device))
    log.info("stage 1/6: capture %s", list(cfg.capture.hooks))
    store = capture_checkpoints(
        run_dir,
        list(cfg.capture.hooks),
        **cfg.capture.data(pretrained=True),
        batch_size=cfg.capture.batch_size,
        device=device,
        progress=progress,
    )[run.steps[-1]]
    if cfg.sae.enabled:
        log.info("stage 2/6: SAE grid")
        _sae_stage(cfg, run_dir, store, progress)
    if cfg.probes.enabled:
        log.info("stage 3/6: sparse probes")
        _probe_stage(cfg, run_dir, store, progress)
    if cfg.tree.enabled and run.corpus.has_trees:
        from ..tree_scores import tree_scores_by_layer

        log.info("stage 4/6: tree projections per layer")
        tree_scores_by_layer(run_dir, n=cfg.tree.n_trees, device=device, progress=progress)
    if cfg.structural.enabled and run.corpus.has_trees:
        from ..structural import run_structural_probes

        log.info("stage 5/6: structural probes per layer")
        s = cfg.structural
        run_structural_probes(
            run_dir, pool=s.pool, controls=s.controls, device=device, rank=s.rank,
            max_epochs=s.max_epochs, control_seed=s.control_seed,
        )  # fmt: skip
    if cfg.report:
        from ..report.write import write_report

        log.info("stage 6/6: report")
        write_report(run_dir)
    return run_dir


def run(
    config: PipelineConfig | Mapping[str, Any] | str | os.PathLike, *, progress: bool = True
) -> Path:
    """Run (or resume) the pipeline; returns the run directory (with ``seeds``, the folder
    of the seeds' run directories ``seed{s}``). With
    ``model = {pretrained = "PATH"}`` and ``data = {treebank = "FILE"}`` the pipeline
    analyses that local Hugging Face model on the corpus instead of training one. The run's
    writer lock (:meth:`hierlens.models.Run.lock`) is held throughout."""
    cfg = load_config(config)
    with Run(Path(cfg.out_dir) / cfg.name).lock():
        if cfg.is_pretrained:
            return _run_pretrained(cfg, progress)
        if cfg.seeds:
            return _run_seeds(cfg, progress)
        return _run_stages(cfg, progress)


def _check_hooks(cfg: PipelineConfig, model: Any) -> None:
    """The capture's hooks and the SAE hook must be hooks of ``model``."""
    from hierlens.models.hooks import resolve_hook_names

    captured = resolve_hook_names(model, list(cfg.capture.hooks))
    if cfg.sae.enabled:
        sae_hooks = resolve_hook_names(model, [cfg.sae.hook])
        if not set(sae_hooks) <= set(captured):
            raise ValueError(
                f"[sae] hook {cfg.sae.hook!r} is not among the captured hooks "
                f"{list(cfg.capture.hooks)} ([capture] hooks)"
            )


def _check_stages(cfg: PipelineConfig, task: Any, model: Any) -> None:
    """Unknown hooks, probe labels, causal variables and a tracked layer the model lacks fail
    before training."""
    from hierlens.models.hooks import resolve_hook_names

    _check_hooks(cfg, model)
    if cfg.tree.enabled and hasattr(model, "cfg"):
        from ..layer_numbering import block_of_layer

        block_of_layer(cfg.tree.layer, model.cfg.n_layers)  # a layer the model has
    if cfg.causal.enabled:
        from hierlens.models.tasks.variables import causal_model, list_causal_tasks

        if task.name in list_causal_tasks():
            cm = causal_model(task)
            for v in cfg.causal.variables:
                cm.check_variable(v)
        if cfg.causal.hooks:
            resolve_hook_names(model, list(cfg.causal.hooks))
    if cfg.probes.labels:
        available = set(task.sample(1, "train", 0)[0].token_labels)
        bad = [n for n in cfg.probes.labels if n not in available]
        if bad:
            raise ValueError(
                f"[probes] unknown label(s) {bad}; the task provides {sorted(available)}"
            )


def _seed_configs(cfg: PipelineConfig) -> list[PipelineConfig]:
    """One pipeline per seed of ``cfg.seeds``: ``out_dir/name/seed{s}``, model and data
    seeded with ``s``."""
    root = str(Path(cfg.out_dir) / cfg.name)
    return [
        dataclasses.replace(
            cfg,
            name=f"seed{s}",
            out_dir=root,
            seeds=(),
            model={**cfg.model, "seed": s},
            train=cfg.train.replace(seed=s),
        )
        for s in cfg.seeds
    ]


def _run_seeds(cfg: PipelineConfig, progress: bool) -> Path:
    """The pipeline once per seed: the seeds' models trained as one fused stack first, then
    the other stages on each run (whose training is then already done)."""
    subs = _seed_configs(cfg)
    task = get_task(cfg.task["name"], **dict(cfg.task.get("params", {})))
    mcfgs = [ModelConfig.for_task(task, **dict(sub.model)) for sub in subs]
    models = [build_transformer(m, device=cfg.train.device) for m in mcfgs]
    _check_stages(cfg, task, models[0])
    run_dirs = [Path(sub.out_dir) / sub.name for sub in subs]
    log.info("stage 1/6: train seeds %s fused -> %s", list(cfg.seeds), run_dirs[0].parent)
    results = train_many(
        models, task, [sub.train for sub in subs], run_dirs, model_configs=mcfgs,
        progress=progress,
    )  # fmt: skip
    for result in results:
        if result.stopped:
            raise TrainingDiverged(f"{result.run_dir}: {result.stopped}")
    for sub, run_dir in zip(subs, run_dirs, strict=True):
        with Run(run_dir).lock():
            _run_stages(sub, progress)
    return Path(cfg.out_dir) / cfg.name


def _run_stages(cfg: PipelineConfig, progress: bool) -> Path:
    """The stages of :func:`run` for a trained model, under the run's lock."""
    task = get_task(cfg.task["name"], **dict(cfg.task.get("params", {})))
    model_config = ModelConfig.for_task(task, **dict(cfg.model))
    run_dir = Path(cfg.out_dir) / cfg.name
    model = build_transformer(model_config, device=cfg.train.device)
    _check_stages(cfg, task, model)

    log.info("stage 1/6: train -> %s", run_dir)
    result = train(model, task, cfg.train, run_dir, model_config=model_config, progress=progress)
    if result.stopped:
        raise TrainingDiverged(f"{run_dir}: {result.stopped}; the later stages need a model")
    steps = open_run(run_dir).steps
    capture_steps = steps if cfg.capture.all_checkpoints else [steps[-1]]
    log.info("stage 2/6: capture %s at steps %s", list(cfg.capture.hooks), capture_steps)
    stores = capture_checkpoints(
        run_dir,
        list(cfg.capture.hooks),
        steps=capture_steps,
        **cfg.capture.data(pretrained=False),
        batch_size=cfg.capture.batch_size,
        device=cfg.train.device,
        progress=progress,
    )
    store = stores[steps[-1]]
    if cfg.sae.enabled:
        log.info("stage 3/6: SAE grid")
        _sae_stage(cfg, run_dir, store, progress)
    if cfg.probes.enabled:
        log.info("stage 4/6: sparse probes")
        _probe_stage(cfg, run_dir, store, progress)
    if cfg.causal.enabled:
        from .stages import causal_stage

        log.info("stage 4b/6: causal evidence (patching, DAS)")
        causal_stage(cfg, run_dir, model, task, progress)
    if cfg.tree.enabled:
        from ..grokking import track

        log.info("stage 5/6: tree projections and tracking over %d checkpoints", len(steps))
        track(
            run_dir,
            task,
            n=cfg.tree.n,
            n_trees=cfg.tree.n_trees,
            layer=cfg.tree.layer,
            device=cfg.train.device,
            progress=progress,
            log_to=cfg.train.log_to,
        )
    if cfg.report:
        from ..report.write import write_report

        log.info("stage 6/6: report")
        write_report(run_dir)
        if cfg.train.log_to:  # the report and figures as the training run's artifacts
            from hierlens.analysis.export import log_run_artifacts

            log_run_artifacts(run_dir, cfg.train.log_to)
    return run_dir
