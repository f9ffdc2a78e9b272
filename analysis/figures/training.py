"""Data of the training-dynamics figures: grokking curves and tree scores of a tracked run, and
the depth sweep after [Murty2023b].

A *setting* is a JSON-able dict ``{"task": {"name", "params"}, "model": ModelConfig kwargs,
"train": TrainConfig kwargs, "track": track kwargs}`` (plus ``"depths"`` and ``"seeds"`` for
the sweep).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from hierlens.core.validate import check_int
from hierlens.models import TrainConfig
from hierlens.models.run import Run, open_run
from hierlens.models.tasks.registry import get_task
from hierlens.models.train import train
from hierlens.models.transformer import ModelConfig, build_transformer

from ..grokking import grokking_summary, main_metric, track
from ..sweep import sweep

log = logging.getLogger(__name__)

SATURATION = 0.98
OOD_THRESHOLD = 0.8
_TRACK_KEYS = ("n", "n_trees", "tree_split", "layer", "seed", "metrics")
_NEEDED = ("accuracy", "tree_score", "parse_f1")


def _with_steps(setting: dict[str, Any], steps: int | None) -> dict[str, Any]:
    """``setting`` with its training shortened to ``steps`` (checkpoint schedule kept
    within range)."""
    if steps is None:
        return setting
    check_int("steps", steps)
    tr = {**setting["train"], "steps": steps}
    tr["warmup_steps"] = min(tr.get("warmup_steps", 100), steps)
    tr["checkpoint_every"] = min(tr.get("checkpoint_every", 500), steps)
    return {**setting, "train": tr}


def _validate(setting: dict[str, Any], device: str | None) -> tuple[Any, ModelConfig, TrainConfig]:
    task = get_task(setting["task"]["name"], **setting["task"].get("params", {}))
    model_config = ModelConfig.for_task(task, **setting["model"])
    train_config = TrainConfig(**{**setting["train"], "device": device})
    return task, model_config, train_config


def train_tracked_run(
    setting: dict[str, Any],
    run_dir: str | os.PathLike,
    *,
    device: str | None = None,
    progress: bool = True,
) -> Path:
    """Train (resuming) the run a setting describes into ``run_dir`` and track every
    checkpoint into ``run_dir/tracking.jsonl``; returns ``run_dir``."""
    task, model_config, train_config = _validate(setting, device)
    model = build_transformer(model_config, device=train_config.device)
    train(
        model,
        task,
        train_config,
        run_dir,
        model_config=model_config,
        resume=True,
        progress=progress,
    )
    track(run_dir, task, device=device, progress=progress, **setting.get("track", {}))
    return Path(run_dir)


def tracked_records(
    run_dir: str | os.PathLike,
    track_options: dict[str, Any] | None = None,
    *,
    device: str | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """The tracking records of an existing run, tracking its checkpoints first where
    ``tracking.jsonl`` is missing or does not cover every checkpoint.

    An existing ``tracking.jsonl`` is continued with the settings it was written with (so
    nothing recorded is thrown away); ``track_options`` apply only when there is none.
    Raises ``ValueError`` when the existing records lack accuracy, tree score or parse F1.
    """
    run = open_run(run_dir)  # FileNotFoundError when it is not a run directory
    if not run.steps:
        raise ValueError(f"{run_dir}: the run has no checkpoints to draw")
    existing = run.read_records(run.tracking_path)
    options = dict(track_options or {})
    if existing:
        settings = existing[-1].get("settings", {})
        missing = [m for m in _NEEDED if m not in settings.get("metrics", ())]
        if missing:
            raise ValueError(
                f"{run.tracking_path} was tracked without {missing}; rerun "
                f"`hierlens track {run_dir}` (all metrics) or move the file away"
            )
        options = {k: settings[k] for k in _TRACK_KEYS if k in settings}
        options["metrics"] = tuple(options.get("metrics", ()))
        done = {r["step"] for r in existing if r.get("settings") == settings}
        if set(run.steps) <= done:
            return sorted(
                (r for r in existing if r.get("settings") == settings), key=lambda r: r["step"]
            )
    log.info("tracking %s", run_dir)
    return track(run_dir, device=device, progress=progress, **options)


def training_curves(
    setting: dict[str, Any],
    *,
    out_dir: str | os.PathLike,
    run_dir: str | os.PathLike | None = None,
    steps: int | None = None,
    device: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """The data of ``grokking-curves`` and ``tree-score-over-training``.

    With ``run_dir`` the curves come from that existing run (tracked first when needed);
    otherwise ``setting`` (``steps`` overrides its training length) is trained into
    ``out_dir/grokking_run`` (resumed when there) and tracked. Returns ``task``, ``metric``
    (the task's main metric), ``run_dir``, per tracked checkpoint ``steps``, ``test_id``,
    ``test_ood``, ``tree_score``, ``parse_f1``; ``train`` (``steps``, ``loss`` from
    ``metrics.jsonl``); ``summary`` (:func:`grokking_summary` at ``saturation`` and
    ``ood_threshold``).
    """
    if run_dir is None:
        setting = _with_steps(setting, steps)
        _validate(setting, device)
        run_dir = Path(out_dir) / "grokking_run"
        train_tracked_run(setting, run_dir, device=device, progress=progress)
        records = tracked_records(run_dir, setting.get("track"), device=device, progress=False)
    else:
        records = tracked_records(run_dir, setting.get("track"), device=device, progress=progress)
    run = open_run(run_dir)
    task = run.task
    metric = main_metric(task)
    records = sorted(records, key=lambda r: r["step"])
    train_records = run.metrics("train")
    summary = grokking_summary(
        records, metric=metric, saturation=SATURATION, ood_threshold=OOD_THRESHOLD
    )
    return {
        "task": task.name,
        "metric": metric,
        "run_dir": str(run_dir),
        "steps": [int(r["step"]) for r in records],
        "test_id": [float(r[f"test_id/{metric}"]) for r in records],
        "test_ood": [float(r[f"test_ood/{metric}"]) for r in records],
        "tree_score": [r.get("tree_score") for r in records],
        "parse_f1": [r.get("parse_f1") for r in records],
        "train": {
            "steps": [int(r["step"]) for r in train_records],
            "loss": [float(r["loss"]) for r in train_records],
        },
        "summary": summary.to_dict(),
        "saturation": SATURATION,
        "ood_threshold": OOD_THRESHOLD,
    }


def depth_sweep(
    setting: dict[str, Any],
    *,
    out_dir: str | os.PathLike,
    steps: int | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """The data of ``depth-inverted-u``: :func:`hierlens.analysis.sweep.sweep` over
    ``setting["depths"]`` x ``setting["seeds"]`` into ``out_dir/depth_sweep`` (one process
    per job, resumable), then per run its final and best OOD accuracy, final in-domain
    accuracy, final tree score and parse F1 (from its ``tracking.jsonl``)."""
    setting = _with_steps(setting, steps)
    task, _, train_config = _validate(setting, device)
    depths, seeds = list(setting["depths"]), list(setting["seeds"])
    rows = sweep(
        task,
        depths,
        seeds,
        train_config,
        Path(out_dir) / "depth_sweep",
        model=dict(setting["model"]),
        track_options=dict(setting.get("track", {})),
    )
    metric = main_metric(task)
    runs = []
    for row in rows:
        records = sorted(
            Run(row["run_dir"]).read_records(Run(row["run_dir"]).tracking_path),
            key=lambda r: r["step"],
        )
        ood = [float(r[f"test_ood/{metric}"]) for r in records]
        last = records[-1]
        runs.append(
            {
                "depth": int(row["depth"]),
                "seed": int(row["seed"]),
                "run_dir": row["run_dir"],
                "final_ood": ood[-1],
                "best_ood": max(ood),
                "final_id": float(last[f"test_id/{metric}"]),
                "final_tree_score": last.get("tree_score"),
                "final_parse_f1": last.get("parse_f1"),
            }
        )
    return {"task": task.name, "metric": metric, "depths": depths, "seeds": seeds, "runs": runs}
