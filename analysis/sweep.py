"""Depth sweeps: train and track a grid of models, one process (or Ray task) per job, resumably.

Murty et al. (ACL 2023) find an inverted U: out-of-domain accuracy (and tree-structuredness)
is best at intermediate depth. ``sweep`` trains one model per (depth, seed) in its own
process, tracks its checkpoints (:func:`hierlens.analysis.grokking.track`), and collects the
per-job summaries into ``out_dir/sweep.jsonl``. A job whose ``done.json`` exists is skipped,
so an interrupted sweep continues where it stopped; an interrupted job resumes from its last
checkpoint. With ``backend="ray"`` every job is a task on a Ray cluster (see
:mod:`hierlens.analysis.ray_backend`). A job that fails is reported (``sweep_summary.json``
holds each run's error) and does not stop the others; :class:`SweepFailed` is raised at the
end.

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
SUMMARY = "sweep_summary.json"
BACKENDS = ("process", "ray")


class SweepFailed(RuntimeError):
    """Some runs of a sweep failed; ``summary`` is what ``sweep_summary.json`` holds."""

    def __init__(self, summary: dict[str, Any]) -> None:
        self.summary = summary
        failed = "; ".join(f"{f['run']}: {f['error']}" for f in summary["failed"])
        super().__init__(f"{len(summary['failed'])} sweep run(s) failed: {failed}")


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
    backend: str = "process",
    address: str | None = None,
    num_cpus: float = 1,
    num_gpus: float = 0,
) -> list[dict[str, Any]]:
    """Train and track one model per ``(depth, seed)``; returns one summary row per job.

    ``model`` holds extra :class:`ModelConfig` fields (``d_model``, ``n_heads``, ...);
    ``n_layers`` comes from ``depths`` and the initialisation seed from ``seeds`` (which also
    seed the data order). ``track_options`` go to :func:`track`. Rows hold ``depth``,
    ``seed``, ``run_dir`` and the :class:`GrokkingSummary` fields; they are also written to
    ``out_dir/sweep.jsonl``, and with the runs that ran now and those that failed to
    ``out_dir/sweep_summary.json``; ``out_dir/sweep_depth.png`` plots them by depth.

    ``backend``: ``"process"`` runs the jobs one after another, each in a fresh Python
    process; ``"ray"`` runs them as Ray tasks with ``num_cpus`` / ``num_gpus`` each (a
    fraction of a GPU packs several small models on one) on the cluster at ``address``
    (``"auto"``, ``"HOST:PORT"``; None: a local Ray started in this process).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "ray":
        from .ray_backend import require_ray

        require_ray()
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
    pending: list[tuple[str, tuple]] = []
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
                pending.append((run_dir.name, (str(run_dir / "job.json"),)))
    errors: dict[str, str] = {}
    if backend == "ray":
        from .ray_backend import map_tasks

        log.info("sweep: %d job(s) to run on Ray", len(pending))
        for o in map_tasks(run_job, pending, address=address, num_cpus=num_cpus, num_gpus=num_gpus):
            if not o.ok:
                errors[o.key] = o.error
    else:
        for name, (job_file,) in pending:
            log.info("sweep job %s", name)
            proc = subprocess.run([sys.executable, "-m", "hierlens.analysis.sweep", job_file])
            if proc.returncode != 0:
                errors[name] = f"exit status {proc.returncode}"
    rows = []
    for depth in depths:
        for seed in seeds:
            run_dir = out / job_name(depth, seed)
            if (run_dir / DONE).exists():
                row = {"depth": depth, "seed": seed, "run_dir": str(run_dir)}
                rows.append({**row, **read_json(run_dir / DONE)})
    atomic_write_jsonl_records(out / "sweep.jsonl", rows)
    summary = {
        "runs": rows,
        "ran": [name for name, _ in pending if name not in errors],
        "failed": [{"run": name, "error": err} for name, err in errors.items()],
    }
    atomic_write_json(out / SUMMARY, summary)
    if rows and not errors:
        _plot_depths({"task": task.name, "seeds": seeds, "runs": rows}, out / "sweep_depth.png")
    if errors:
        raise SweepFailed(summary)
    return rows


def _plot_depths(data: dict[str, Any], path: Path) -> None:
    from .figures.plot import plot_depth_inverted_u

    fig = plot_depth_inverted_u(data)
    fig.savefig(path, dpi=100)


def run_job(job_file: str | os.PathLike) -> dict[str, Any]:
    """Train (resuming) and track the job described by ``job_file``; then write ``done.json``
    and return its summary."""
    job = read_json(job_file)
    task = get_task(job["task"]["name"], **job["task"]["params"])
    model_config = ModelConfig.for_task(task, **job["model"])
    config = TrainConfig.from_dict(job["train"])
    run_dir = Path(job["run_dir"])
    model = build_transformer(model_config, device=config.device)
    train(model, task, config, run_dir, model_config=model_config, progress=False)
    track(run_dir, task, progress=False, **{"log_to": config.log_to, **job["track"]})
    summary = grokking_summary(run_dir).to_dict()
    atomic_write_json(run_dir / DONE, summary)
    return summary


if __name__ == "__main__":  # pragma: no cover - exercised through sweep() in a subprocess
    logging.basicConfig(level=logging.INFO)
    run_job(sys.argv[1])
