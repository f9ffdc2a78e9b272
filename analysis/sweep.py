"""Depth sweeps: train and track a grid of models, one process (or Ray task) per stack, resumably.

Murty et al. (ACL 2023) find an inverted U: out-of-domain accuracy (and tree-structuredness)
is best at intermediate depth. ``sweep`` trains one model per (depth, seed); the seeds of one
depth (models of one shape) train fused as one stack (:func:`~hierlens.models.train_many`) in
one process. It tracks each model's checkpoints (:func:`hierlens.analysis.grokking.track`),
and collects the per-job summaries into ``out_dir/sweep.jsonl``. A job whose ``done.json``
exists is skipped, so an interrupted sweep continues where it stopped; an interrupted job
resumes from its last checkpoint. With ``backend="ray"`` every stack is a task on a Ray
cluster (see :mod:`hierlens.analysis.ray_backend`). A job that fails is reported
(``sweep_summary.json`` holds each run's error) and does not stop the others;
:class:`SweepFailed` is raised at the end.

    python -m hierlens.analysis.sweep JOB.json ...   # what each process runs (one stack)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hierlens.core.atomic_io import read_json, write_checked_json, write_checked_jsonl
from hierlens.core.validate import check_int
from hierlens.models import TrainConfig, get_task
from hierlens.models.run import Run
from hierlens.models.run_load import run_config_dict
from hierlens.models.tasks.base import Task
from hierlens.models.train_many import train_many
from hierlens.models.train_run import holds_other_config
from hierlens.models.transformer import ModelConfig, build_transformer

from .grokking import TrackConfig, grokking_summary, track
from .layer_numbering import block_of_layer
from .ray_backend import check_backend

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

DONE = "done.json"
SUMMARY = "sweep_summary.json"


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

    ``backend``: ``"process"`` runs the stacks (the pending seeds of one depth) one after
    another, each in a fresh Python process; ``"ray"`` runs them as Ray tasks with ``num_cpus`` / ``num_gpus`` each (a
    fraction of a GPU packs several small models on one) on the cluster at ``address``
    (``"auto"``, ``"HOST:PORT"``; None: a local Ray started in this process).
    """
    depths, seeds, model = _check_sweep(task, depths, seeds, model, backend, track_options)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pending, conflicts = _write_jobs(task, depths, seeds, model, train_config, track_options, out)
    errors: dict[str, str] = dict(conflicts)
    if backend == "ray":
        errors.update(_run_on_ray(pending, address, num_cpus, num_gpus))
    else:
        errors.update(_run_in_processes(pending, out))
    rows = _done_rows(depths, seeds, out)
    write_checked_jsonl(out / "sweep.jsonl", rows)
    summary = {
        "runs": rows,
        "ran": [name for name, _ in pending if name not in errors],
        "failed": [{"run": name, "error": err} for name, err in errors.items()],
    }
    write_checked_json(out / SUMMARY, summary)
    if rows and not errors:
        _plot_depths({"task": task.name, "seeds": seeds, "runs": rows}, out / "sweep_depth.png")
    if errors:
        raise SweepFailed(summary)
    return rows


def _check_sweep(
    task: Task,
    depths: Sequence[int],
    seeds: Sequence[int],
    model,
    backend: str,
    track_options: dict[str, Any] | None,
) -> tuple[list[int], list[int], dict[str, Any]]:
    """Reject a bad backend, grid, model or tracking option before any job starts (Ray must
    be importable for ``backend="ray"``); returns the depths, seeds and extra model fields as
    lists/dict."""
    check_backend(backend)
    depths, seeds = list(depths), list(seeds)
    if not depths or not seeds:
        raise ValueError("sweep needs at least one depth and one seed")
    for depth in depths:
        check_int("a depth", depth)
    model = dict(model or {})
    for key in ("n_layers", "seed", "d_vocab", "n_ctx"):
        if key in model:
            raise ValueError(f"model[{key!r}] is set by the sweep; remove it")
    ModelConfig.for_task(task, **model)  # validate before any job starts
    fields = {f.name for f in dataclasses.fields(TrackConfig)}
    given = {k: v for k, v in (track_options or {}).items() if k in fields and v is not None}
    track = TrackConfig(**given)  # None: the default, as track() reads it
    block_of_layer(track.layer, min(depths))  # a layer every depth has
    return depths, seeds, model


def _write_jobs(
    task: Task,
    depths: list[int],
    seeds: list[int],
    model: dict[str, Any],
    train_config: TrainConfig,
    track_options: dict[str, Any] | None,
    out: Path,
) -> tuple[list[tuple[str, tuple]], dict[str, str]]:
    """Write ``job.json`` of every (depth, seed) job not done yet; returns the pending jobs
    ``(name, (job file,))`` and the jobs whose folder holds a run of another configuration
    (``{name: error}``; found before any stack forms, so the other runs of its stack still
    train)."""
    pending: list[tuple[str, tuple]] = []
    conflicts: dict[str, str] = {}
    for depth in depths:
        for seed in seeds:
            run_dir = out / job_name(depth, seed)
            if (run_dir / DONE).exists():
                continue
            job = {
                "task": {"name": task.name, "params": task.to_dict()},
                "model": {**model, "n_layers": depth, "seed": seed},
                "train": train_config.replace(seed=seed).to_dict(),
                "track": dict(track_options or {}),
                "run_dir": str(run_dir),
            }
            if holds_other_config(Run(run_dir), _run_config(job)):
                conflicts[run_dir.name] = (
                    f"{run_dir} holds a run with a different configuration; use another "
                    "output folder, or delete that run to train it again"
                )
                continue
            run_dir.mkdir(parents=True, exist_ok=True)
            write_checked_json(run_dir / "job.json", job)
            pending.append((run_dir.name, (str(run_dir / "job.json"),)))
    return pending, conflicts


def _run_on_ray(
    pending: list[tuple[str, tuple]], address: str | None, num_cpus: float, num_gpus: float
) -> dict[str, str]:
    """Run each stack of ``pending`` as one Ray task; returns ``{job name: error}`` of the
    jobs of the stacks that failed."""
    from .ray_backend import map_tasks

    errors: dict[str, str] = {}
    groups = fused_groups(pending)
    log.info("sweep: %d job(s) in %d stack(s) to run on Ray", len(pending), len(groups))
    tasks = [(tuple(n for n, _ in g), tuple(f for _, (f,) in g)) for g in groups]
    for o in map_tasks(run_jobs_of, tasks, address=address, num_cpus=num_cpus, num_gpus=num_gpus):
        if not o.ok:
            errors.update({name: o.error for name in o.key})
    return errors


def _run_in_processes(pending: list[tuple[str, tuple]], out: Path) -> dict[str, str]:
    """Run each stack of ``pending`` in a fresh Python process, one after another; returns
    ``{job name: error}`` of the jobs left without ``done.json`` by a process that failed."""
    errors: dict[str, str] = {}
    for group in fused_groups(pending):
        names = [name for name, _ in group]
        log.info("sweep jobs %s (one stack)", ", ".join(names))
        files = [job_file for _, (job_file,) in group]
        proc = subprocess.run([sys.executable, "-m", "hierlens.analysis.sweep", *files])
        if proc.returncode != 0:
            for name in names:
                if not (out / name / DONE).exists():
                    errors[name] = f"exit status {proc.returncode}"
    return errors


def _done_rows(depths: list[int], seeds: list[int], out: Path) -> list[dict[str, Any]]:
    """One row per finished (depth, seed) job, in grid order: ``depth``, ``seed``,
    ``run_dir`` and the summary its ``done.json`` holds."""
    rows = []
    for depth in depths:
        for seed in seeds:
            run_dir = out / job_name(depth, seed)
            if (run_dir / DONE).exists():
                row = {"depth": depth, "seed": seed, "run_dir": str(run_dir)}
                rows.append({**row, **read_json(run_dir / DONE)})
    return rows


def _plot_depths(data: dict[str, Any], path: Path) -> None:
    fig = plot_depth_inverted_u(data)
    fig.savefig(path, dpi=100)


def _run_config(job: dict[str, Any]) -> dict[str, Any]:
    """The ``config.json`` that training ``job`` writes."""
    task = get_task(job["task"]["name"], **job["task"]["params"])
    model = ModelConfig.for_task(task, **job["model"])
    return run_config_dict(task, model, TrainConfig.from_dict(job["train"]))


def fused_groups(pending: list[tuple[str, tuple]]) -> list[list[tuple[str, tuple]]]:
    """The pending jobs in groups that train as one stack: jobs whose models share a shape
    and whose task agrees (in a sweep, the seeds of one depth)."""
    groups: dict[str, list[tuple[str, tuple]]] = {}
    for item in pending:
        job = read_json(item[1][0])
        shape = {k: v for k, v in job["model"].items() if k != "seed"}
        key = json.dumps([shape, job["task"]], sort_keys=True)
        groups.setdefault(key, []).append(item)
    return list(groups.values())


def run_jobs_of(*job_files: str) -> list[dict[str, Any]]:
    """:func:`run_jobs` with the job files as arguments (a Ray task's call)."""
    return run_jobs(job_files)


def run_jobs(job_files: Sequence[str | os.PathLike]) -> list[dict[str, Any]]:
    """Train the jobs of ``job_files`` together (:func:`~hierlens.models.train_many`: models
    of one shape form one stack; each resumes from its own checkpoint), then track each and
    write its ``done.json``; returns the summaries. A model that diverged is an error after
    the others are done."""
    jobs = [read_json(f) for f in job_files]
    tasks = [get_task(j["task"]["name"], **j["task"]["params"]) for j in jobs]
    mcfgs = [ModelConfig.for_task(t, **j["model"]) for t, j in zip(tasks, jobs, strict=True)]
    configs = [TrainConfig.from_dict(j["train"]) for j in jobs]
    run_dirs = [Path(j["run_dir"]) for j in jobs]
    models = [build_transformer(m, device=c.device) for m, c in zip(mcfgs, configs, strict=True)]
    results = train_many(models, tasks, configs, run_dirs, model_configs=mcfgs, progress=False)
    summaries, failed = [], []
    for job, task, config, run_dir, result in zip(
        jobs, tasks, configs, run_dirs, results, strict=True
    ):
        if result.stopped:
            failed.append(f"{run_dir}: {result.stopped}")
            continue
        track(run_dir, task, progress=False, **{"log_to": config.log_to, **job["track"]})
        summary = grokking_summary(run_dir).to_dict()
        write_checked_json(run_dir / DONE, summary)
        summaries.append(summary)
    if failed:
        raise RuntimeError("; ".join(failed))
    return summaries


if __name__ == "__main__":  # pragma: no cover - exercised through sweep() in a subprocess
    logging.basicConfig(level=logging.INFO)
    run_jobs(sys.argv[1:])


def _by_depth(runs: list[dict[str, Any]], key: str) -> tuple[list[int], list[list[float]]]:
    depths = sorted({r["depth"] for r in runs})
    values = [
        [float(r[key]) for r in runs if r["depth"] == d and r.get(key) is not None] for d in depths
    ]
    return depths, values


def plot_depth_inverted_u(data: dict[str, Any]) -> Figure:
    """Final and best OOD accuracy, and final tree score, vs number of layers: mean over
    seeds with min-max bars and one dot per seed (Murty et al. 2023's inverted U)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    runs = data["runs"]
    fig = Figure(figsize=(9, 3.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    panels = (
        (
            axes[0],
            (
                ("best_ood", "best OOD acc. (any checkpoint)", "0.55", "^--"),
                ("final_ood", "final OOD acc.", "tab:red", "o-"),
            ),
        ),
        (axes[1], (("final_tree_score", "final tree score", "tab:purple", "o-"),)),
    )
    for ax, series in panels:
        for key, label, color, style in series:
            depths, values = _by_depth(runs, key)
            keep = [i for i, v in enumerate(values) if v]
            if not keep:
                continue
            xs = [depths[i] for i in keep]
            mean = [float(np.mean(values[i])) for i in keep]
            lo = [m - min(values[i]) for m, i in zip(mean, keep)]
            hi = [max(values[i]) - m for m, i in zip(mean, keep)]
            ax.errorbar(xs, mean, yerr=[lo, hi], fmt=style, color=color, capsize=3, label=label)
            for x, i in zip(xs, keep):
                ax.scatter([x] * len(values[i]), values[i], s=8, color=color, alpha=0.4)
        ax.set_xlabel("number of layers")
        ax.set_xticks(sorted({r["depth"] for r in runs}))
        ax.legend(fontsize=7)
    axes[0].set_ylabel(data.get("metric", "accuracy"))
    axes[0].set_ylim(-0.02, 1.02)
    axes[1].set_ylabel("tree score")
    n_seeds = len(data.get("seeds", [])) or len({r["seed"] for r in runs})
    fig.suptitle(f"{data['task']}: depth sweep ({n_seeds} seed(s) per depth)", fontsize=10)
    fig.tight_layout()
    return fig
