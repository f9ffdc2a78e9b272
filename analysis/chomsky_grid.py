"""A grid of Chomsky-hierarchy runs: tasks x architectures x seeds x learning rates.

Each cell of the grid is one run directory ``out_dir/<task>/<arch>/lr<lr>_seed<seed>/``,
written as :func:`hierlens.models.train` writes it (so it resumes from its last checkpoint)
and then evaluated on ``test_ood``; its ``done.json`` holds the evaluation. The runs of one
(task, architecture), all their seeds and learning rates, train as one fused stack
(:func:`hierlens.models.train_many`: one forward and backward per step for all of them, each
run as it would train alone). A rerun skips every run whose ``done.json`` exists, so an
interrupted grid continues where it stopped and a grid grown by a seed or an architecture
trains only the new runs. Stacks run one after another in this process
(``backend="process"``) or as Ray tasks, one per stack (``backend="ray"``, see
:mod:`hierlens.analysis.ray_backend`).

:func:`chomsky_scores` turns the rows into the score of [Deletang2023]: per
(task, architecture), the test accuracy averaged over the ``test_ood`` lengths, maximised
over seeds and learning rates.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hierlens.core.atomic_io import read_json, write_checked_json
from hierlens.core.validate import check_int, check_number, is_int
from hierlens.models import TrainConfig, get_task, list_tasks
from hierlens.models.architectures import ARCHS, ArchConfig, build_model
from hierlens.models.run import Run
from hierlens.models.run_load import run_config_dict
from hierlens.models.tasks.chomsky import accuracy_by_length
from hierlens.models.train_many import train_many
from hierlens.models.train_run import holds_other_config

from .ray_backend import check_backend

log = logging.getLogger(__name__)

DONE = "done.json"
SUMMARY = "grid_summary.json"
#: the paper's threshold: a score of at least 90% counts as generalising
THRESHOLD = 0.9


class GridFailed(RuntimeError):
    """Some runs of a grid failed; ``summary`` is what ``grid_summary.json`` holds."""

    def __init__(self, summary: dict[str, Any]) -> None:
        self.summary = summary
        failed = "; ".join(f"{f['run']}: {f['error']}" for f in summary["failed"])
        super().__init__(f"{len(summary['failed'])} grid run(s) failed: {failed}")


def run_name(task: str, arch: str, lr: float, seed: int) -> str:
    """``<task>/<arch>/lr<lr>_seed<seed>``: a run's folder under the grid's ``out_dir``."""
    return f"{task}/{arch}/lr{lr:g}_seed{seed}"


def chomsky_grid(
    tasks: Sequence[str],
    archs: Sequence[str],
    seeds: Sequence[int],
    lrs: Sequence[float],
    train_config: TrainConfig | Mapping[str, Any],
    out_dir: str | os.PathLike,
    *,
    task_params: Mapping[str, Any] | None = None,
    model: Mapping[str, Any] | None = None,
    arch_options: Mapping[str, Mapping[str, Any]] | None = None,
    eval_n: int = 500,
    eval_seed: int = 12345,
    backend: str = "process",
    address: str | None = None,
    num_cpus: float = 1,
    num_gpus: float = 0,
) -> list[dict[str, Any]]:
    """Train and evaluate one model per (task, arch, lr, seed); returns one row per finished
    run (``task``, ``arch``, ``lr``, ``seed``, ``run_dir``, ``score`` = ``test_ood``
    accuracy averaged over lengths, ``test_id``, ``by_length`` ``{length: accuracy}``).

    Args:
        train_config: a :class:`TrainConfig` or its keyword arguments; ``lr`` and ``seed``
            are set per run (the seed also initialises the model and orders the data).
        task_params: parameters of every task (e.g. ``n_train``, ``n_test``).
        model: :class:`ArchConfig` fields for every architecture (e.g. ``d_model``);
            ``arch_options[arch]`` overrides them per architecture.
        eval_n: ``test_ood`` (and ``test_id``) examples evaluated per run.
        backend: ``"process"`` (in this process) or ``"ray"`` (one Ray task per run with
            ``num_cpus``/``num_gpus``, on the cluster at ``address``; None: a local Ray).

    Writes ``out_dir/grid_summary.json`` (rows, the runs that ran now, the failures) and
    raises :class:`GridFailed` after the other runs finished when any run failed.
    """
    tasks, archs, seeds, lrs, base, arch_options = _check_grid(
        tasks, archs, seeds, lrs, train_config, model, arch_options, eval_n, backend
    )
    params = dict(task_params or {})
    evaluation = {"n": eval_n, "seed": eval_seed}
    jobs: list[dict[str, Any]] = []
    for task_name in tasks:
        task = get_task(task_name, **params)  # bad task parameters fail here, before training
        for arch in archs:
            fields = {**dict(model or {}), **arch_options.get(arch, {})}
            ArchConfig.for_task(task, arch=arch, **fields)
            for lr in lrs:
                for seed in seeds:
                    job = _cell_job(
                        task, task_name, params, arch, fields, lr, seed, base, evaluation, out_dir
                    )
                    jobs.append(job)
    out = Path(out_dir)
    _refuse_stale_runs(jobs, out)
    out.mkdir(parents=True, exist_ok=True)
    pending = [j for j in jobs if not (Path(j["run_dir"]) / DONE).exists()]
    names = {j["run_dir"]: str(Path(j["run_dir"]).relative_to(out)) for j in jobs}
    stacks: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for job in pending:  # one fused stack per (task, architecture)
        stacks.setdefault((job["key"]["task"], job["key"]["arch"]), []).append(job)
    groups = list(stacks.values())
    if backend == "ray":
        counts = (len(pending), len(jobs))
        errors = _run_stacks_on_ray(groups, names, counts, address, num_cpus, num_gpus)
    else:
        errors = _run_stacks_here(groups, names)
    rows = _grid_rows(jobs)
    summary = {
        "runs": rows,
        "ran": [names[j["run_dir"]] for j in pending if names[j["run_dir"]] not in errors],
        "failed": [{"run": name, "error": err} for name, err in errors.items()],
    }
    write_checked_json(out / SUMMARY, summary)
    if errors:
        raise GridFailed(summary)
    return rows


def _check_grid(
    tasks: Sequence[str],
    archs: Sequence[str],
    seeds: Sequence[int],
    lrs: Sequence[float],
    train_config: TrainConfig | Mapping[str, Any],
    model: Mapping[str, Any] | None,
    arch_options: Mapping[str, Mapping[str, Any]] | None,
    eval_n: int,
    backend: str,
) -> tuple[list, list, list, list, dict[str, Any], dict[str, dict[str, Any]]]:
    """Reject a bad backend, grid axis, training config or model setting before any job is
    made; returns the four axes as lists, the training config's fields and the
    per-architecture options as plain dicts."""
    check_backend(backend)
    tasks, archs, seeds, lrs = list(tasks), list(archs), list(seeds), list(lrs)
    for what, values in (("tasks", tasks), ("archs", archs), ("seeds", seeds), ("lrs", lrs)):
        if not values:
            raise ValueError(f"the grid needs at least one of {what}")
    unknown = [t for t in tasks if t not in list_tasks()]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; tasks: {', '.join(list_tasks())}")
    bad = [a for a in archs if a not in ARCHS]
    if bad:
        raise ValueError(f"unknown architecture(s) {bad}; architectures: {', '.join(ARCHS)}")
    if not all(is_int(s) for s in seeds):
        raise ValueError(f"seeds must be integers, got {seeds}")
    for lr in lrs:
        check_number("a learning rate", lr, strict=True)
    check_int("eval_n", eval_n)
    base = train_config.to_dict() if isinstance(train_config, TrainConfig) else dict(train_config)
    TrainConfig(**base)  # validate before any job starts
    arch_options = {a: dict(o) for a, o in (arch_options or {}).items()}
    stray = sorted(set(arch_options) - set(ARCHS))
    if stray:
        raise ValueError(f"arch_options for unknown architecture(s) {stray}")
    for key in ("arch", "seed", "vocab_size"):
        if key in (model or {}):
            raise ValueError(f"model[{key!r}] is set by the grid; remove it")
    return tasks, archs, seeds, lrs, base, arch_options


def _cell_job(
    task: Any,
    task_name: str,
    params: dict[str, Any],
    arch: str,
    fields: dict[str, Any],
    lr: float,
    seed: int,
    base: dict[str, Any],
    evaluation: dict[str, Any],
    out_dir: str | os.PathLike,
) -> dict[str, Any]:
    """The job of one grid cell (task, arch, lr, seed): what :func:`run_grid_jobs` needs to
    train and evaluate it, its run folder, its ``key`` in the rows and the ``config.json``
    its training writes (``fields``: the architecture's model fields)."""
    run_config = run_config_dict(
        task,
        ArchConfig.for_task(task, **fields, arch=arch, seed=seed),
        TrainConfig(**{**base, "lr": float(lr), "seed": seed}),
    )
    return {
        "task": {"name": task_name, "params": params},
        "model": {**fields, "arch": arch, "seed": seed},
        "train": {**base, "lr": float(lr), "seed": seed},
        "eval": dict(evaluation),
        "run_dir": str(Path(out_dir) / run_name(task_name, arch, lr, seed)),
        "key": {"task": task_name, "arch": arch, "lr": float(lr), "seed": seed},
        "config": run_config,
    }


def _run_stacks_on_ray(
    groups: list[list[dict[str, Any]]],
    names: dict[str, str],
    counts: tuple[int, int],
    address: str | None,
    num_cpus: float,
    num_gpus: float,
) -> dict[str, str]:
    """Run each stack of ``groups`` as one Ray task (``counts``: pending and all runs, for
    the log); returns ``{run name: error}`` of the runs of the stacks that failed."""
    from .ray_backend import map_tasks

    log.info("chomsky grid: %d of %d run(s) in %d stack(s) to do on Ray", *counts, len(groups))
    outcomes = map_tasks(
        run_grid_jobs,
        [(tuple(names[j["run_dir"]] for j in g), (g,)) for g in groups],
        address=address,
        num_cpus=num_cpus,
        num_gpus=num_gpus,
    )
    errors: dict[str, str] = {}
    for o in outcomes:
        if not o.ok:
            errors.update({name: o.error for name in o.key})
    return errors


def _run_stacks_here(groups: list[list[dict[str, Any]]], names: dict[str, str]) -> dict[str, str]:
    """Run the stacks of ``groups`` one after another in this process; a stack that fails is
    logged and does not stop the others. Returns ``{run name: error}`` of the runs a failed
    stack left without ``done.json``."""
    errors: dict[str, str] = {}
    for i, group in enumerate(groups):
        shown = ", ".join(names[j["run_dir"]] for j in group)
        log.info("chomsky grid stack %d/%d: %s", i + 1, len(groups), shown)
        try:
            run_grid_jobs(group)
        except Exception as exc:  # noqa: BLE001 - one failed stack must not stop the grid
            log.exception("stack %s failed", shown)
            for j in group:
                if not (Path(j["run_dir"]) / DONE).exists():
                    errors[names[j["run_dir"]]] = f"{type(exc).__name__}: {exc}"
    return errors


def _grid_rows(jobs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per finished run, in grid order: its ``key``, ``run_dir`` and ``done.json``."""
    rows = []
    for job in jobs:
        done = Path(job["run_dir"]) / DONE
        if done.exists():
            rows.append({**job["key"], "run_dir": job["run_dir"], **read_json(done)})
    return rows


def _refuse_stale_runs(jobs: Sequence[Mapping[str, Any]], out: Path) -> None:
    """A clear error, before any training, when ``out`` holds runs of this grid made with
    other settings (their ``done.json`` would otherwise be reused as if current)."""
    stale = []
    for job in jobs:
        run = Run(job["run_dir"])
        done = run.path / DONE
        other_eval = done.exists() and read_json(done).get("eval", job["eval"]) != job["eval"]
        if holds_other_config(run, job["config"]) or other_eval:
            stale.append(str(run.path.relative_to(out)))
    if stale:
        shown = ", ".join(stale[:3]) + (f" and {len(stale) - 3} more" if len(stale) > 3 else "")
        raise ValueError(
            f"{out} holds {len(stale)} run(s) of this grid made with other settings ({shown}); "
            "use another output folder, or delete those runs to train them again"
        )


def run_grid_jobs(jobs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Train (resuming) grid runs as fused stacks (:func:`~hierlens.models.train_many`) and
    evaluate each; writes and returns each run's ``done.json``. A run whose loss turned
    non-finite stopped there (``"stopped"`` says at which step) and is evaluated with the
    weights of its last finite training record."""
    tasks, model_configs, configs, models = [], [], [], []
    for job in jobs:
        task = get_task(job["task"]["name"], **job["task"]["params"])
        model_config = ArchConfig.for_task(task, **job["model"])
        tasks.append(task)
        model_configs.append(model_config)
        configs.append(TrainConfig.from_dict(job["train"]))
        models.append(build_model(model_config))
    trained = train_many(
        models,
        tasks,
        configs,
        [j["run_dir"] for j in jobs],
        model_configs=model_configs,
        progress=False,
    )
    results = []
    for job, task, config, model, outcome in zip(
        jobs, tasks, configs, models, trained, strict=True
    ):
        n, seed = job["eval"]["n"], job["eval"]["seed"]
        ood = task.evaluate(model, "test_ood", n=n, seed=seed, device=config.device)
        iid = task.evaluate(model, "test_id", n=n, seed=seed, device=config.device)
        result = {
            "score": ood["accuracy"],
            "test_id": iid["accuracy"],
            "by_length": {str(k): v for k, v in accuracy_by_length({**iid, **ood}).items()},
            "n_train": task.n_train,
            "steps": config.steps,
            "eval": dict(job["eval"]),
        }
        if outcome.stopped:
            result["stopped"] = outcome.stopped
        write_checked_json(Path(job["run_dir"]) / DONE, result)
        results.append(result)
    return results


def chomsky_scores(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{task: {arch: cell}}``: per cell the paper's score (the best ``test_ood`` accuracy
    averaged over lengths, over seeds and learning rates), the ``lr``/``seed`` of that run,
    its accuracy per length, every run's score and whether it reaches :data:`THRESHOLD`."""
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        cell = table.setdefault(row["task"], {}).setdefault(row["arch"], {"scores": []})
        cell["scores"].append(row["score"])
        if "score" not in cell or row["score"] > cell["score"]:
            cell.update(
                score=row["score"],
                lr=row["lr"],
                seed=row["seed"],
                test_id=row["test_id"],
                by_length=row["by_length"],
            )
    for cells in table.values():
        for cell in cells.values():
            cell["generalises"] = cell["score"] >= THRESHOLD
    return table
