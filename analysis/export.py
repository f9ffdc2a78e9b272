"""Replay a finished run directory into an experiment tracker.

:func:`export_run` sends ``metrics.jsonl`` (as ``<split>/<metric>``, the names training logs
under) and ``tracking.jsonl`` (as ``track/<metric>``) at their steps, the run's
``config.json`` as hyperparameters, and the report and figures as artifacts, to a fresh
TensorBoard, W&B or MLflow run: the same tracker run that logging during training and
tracking would have made, for runs made without a logger.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from hierlens.core.confined_delete import remove_tree
from hierlens.core.loggers import check_trackers, scalars
from hierlens.core.trackers import make_logger
from hierlens.models.run import Run, open_run
from hierlens.models.tracker_paths import TrackerPaths

__all__ = ["export_run", "log_run_artifacts"]

_EVENTS = "events.out.tfevents."


def export_run(
    run_dir: str | os.PathLike,
    to: str | Iterable[str],
    *,
    out_dir: str | os.PathLike | None = None,
) -> TrackerPaths:
    """Log run ``run_dir``'s metrics, tracking records, config, report and figures to the
    trackers ``to`` (``"tensorboard"``, ``"wandb"``, ``"mlflow"``); returns where their files
    and run ids are (``out_dir``, default the run's ``trackers/export/``). Each export makes
    new tracker runs (an earlier export's TensorBoard files there are replaced)."""
    backends = check_trackers(to, "export --to")
    run = open_run(run_dir)
    paths = TrackerPaths(out_dir) if out_dir is not None else Run(run).trackers("export")
    # writing into the run's trackers/ makes this a writer of the run: it holds the lock
    with run.lock() if out_dir is None else run.confined():
        if "tensorboard" in backends:  # only the event files an export writes
            remove_tree(paths.tensorboard_dir, lambda parts: parts[-1].startswith(_EVENTS))
        with make_logger(
            backends, paths, name=run.path.name, params=run.config, resume=False
        ) as logger:
            logger.log_records(run.read_records(run.metrics_path), "split")
            for record in run.read_records(run.tracking_path):
                logger.log_scalars(scalars(record, "track"), int(record["step"]))
            logger.log_artifacts([run.report_path, run.figures_dir])
    return paths


def log_run_artifacts(
    run_dir: str | os.PathLike, log_to: Iterable[str], stage: str = "train"
) -> None:
    """Attach a run's report and figures to the tracker runs of ``stage`` (continuing the
    W&B and MLflow runs whose ids the run directory holds; TensorBoard has no artifacts)."""
    run = Run(run_dir)
    backends = [b for b in check_trackers(log_to) if b != "tensorboard"]
    if not backends:
        return
    with run.confined(), make_logger(backends, run.trackers(stage), name=run.path.name) as logger:
        logger.log_artifacts([run.report_path, run.figures_dir])
