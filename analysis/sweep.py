"""Depth sweeps: train and track a grid of models, one process per job, resumably.

Murty et al. (ACL 2023) find an inverted U: out-of-domain accuracy (and tree-structuredness)
is best at intermediate depth. ``sweep`` trains one model per (depth, seed) in its own
process, tracks its checkpoints (:func:`hierlens.analysis.grokking.track`), and collects the
per-job summaries into ``out_dir/sweep.jsonl``. A job whose ``done.json`` exists is skipped,
so an interrupted sweep continues where it stopped; an interrupted job resumes from its last
checkpoint.

    python -m hierlens.analysis.sweep JOB.json    # what each job process runs
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hierlens.models.atomic_io import atomic_write_json, atomic_write_jsonl_records, read_json
from hierlens.models.tasks import Task, get_task
from hierlens.models.train import TrainConfig, train
from hierlens.models.transformer import ModelConfig, build_transformer

from .grokking import grokking_summary, track

log = logging.getLogger(__name__)

DONE = "done.json"


def job_name(depth: int, seed: int) -> str:
    return f"depth{depth:02d}_seed{seed}"


def sweep(
    task: Task,
    depths: Sequence[int],
    seeds: Sequence[int],
    train_config: TrainConfig,
    out_dir: str | os.PathLike,
    *,
    model: dict[str, Any] | None = None,
    track_options: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Train and track one model per ``(depth, seed)``; returns one summary row per job.

    ``model`` holds extra :class:`ModelConfig` fields (``d_model``, ``n_heads``, ...);
    ``n_layers`` comes from ``depths`` and the initialisation seed from ``seeds`` (which also
    seed the data order). ``track_options`` go to :func:`track`. Rows hold ``depth``,
    ``seed``, ``run_dir`` and the :class:`GrokkingSummary` fields; they are also written to
    ``out_dir/sweep.jsonl``.
    """
    depths, seeds = list(depths), list(seeds)
    if not depths or not seeds:
        raise ValueError("sweep needs at least one depth and one seed")
    if any(not isinstance(d, int) or d < 1 for d in depths):
        raise ValueError(f"depths must be positive integers, got {depths}")
    model = dict(model or {})
    for key in ("n_layers", "seed", "d_vocab", "n_ctx"):
        if key in model:
            raise ValueError(f"model[{key!r}] is set by the sweep; remove it")
    ModelConfig.for_task(task, **model)  # validate before any job starts
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for depth in depths:
        for seed in seeds:
            run_dir = out / job_name(depth, seed)
            if not (run_dir / DONE).exists():
                job = {
                    "task": {"name": task.name, "params": task.to_dict()},
                    "model": {**model, "n_layers": depth, "seed": seed},
                    "train": train_config.replace(seed=seed).to_dict(),
                    "track": dict(track_options or {}),
                    "run_dir": str(run_dir),
                }
                run_dir.mkdir(parents=True, exist_ok=True)
                atomic_write_json(run_dir / "job.json", job)
                log.info("sweep job %s", run_dir.name)
                proc = subprocess.run(
                    [sys.executable, "-m", "hierlens.analysis.sweep", str(run_dir / "job.json")]
                )
                if proc.returncode != 0:
                    raise RuntimeError(
                        f"sweep job {run_dir} failed with exit status {proc.returncode}"
                    )
            rows.append(
                {"depth": depth, "seed": seed, "run_dir": str(run_dir), **read_json(run_dir / DONE)}
            )
    atomic_write_jsonl_records(out / "sweep.jsonl", rows)
    return rows


def run_job(job_file: str | os.PathLike) -> None:
    """Train (resuming) and track the job described by ``job_file``; then write ``done.json``."""
    job = read_json(job_file)
    task = get_task(job["task"]["name"], **job["task"]["params"])
    model_config = ModelConfig.for_task(task, **job["model"])
    config = TrainConfig.from_dict(job["train"])
    run_dir = Path(job["run_dir"])
    model = build_transformer(model_config, device=config.device)
    train(model, task, config, run_dir, model_config=model_config, progress=False)
    track(run_dir, task, progress=False, **job["track"])
    atomic_write_json(run_dir / DONE, grokking_summary(run_dir).to_dict())


if __name__ == "__main__":  # pragma: no cover - exercised through sweep() in a subprocess
    logging.basicConfig(level=logging.INFO)
    run_job(sys.argv[1])
