"""What a training run writes, shared by :func:`~hierlens.models.train` (one model) and
:func:`~hierlens.models.train_many.train_many` (stacks of models): the input checks made
before any work, run-directory preparation (``config.json``, clearing for ``overwrite``,
dropping metric records an interrupted run wrote after its checkpoint), the evaluation sets,
the training-loss record, and writing evaluation records."""

from __future__ import annotations

from typing import Any

import torch

from hierlens.core.atomic_io import append_jsonl, read_json, write_checked_jsonl
from hierlens.core.optim import lr_at
from hierlens.core.trackers import MultiLogger, make_logger

from .architectures import ArchConfig
from .model_inputs import is_bidirectional
from .run import Run
from .run_clean import clear_run
from .run_load import run_config_dict
from .tasks.base import Example, Task
from .train_config import TrainConfig
from .transformer import ModelConfig

__all__ = [
    "RunConflictError",
    "check_training_inputs",
    "config_lr",
    "eval_sets",
    "open_tracker",
    "prepare_run_dir",
    "train_record",
    "truncate_metrics",
    "write_evaluation",
]

# Fields that may differ between an interrupted run and its resumption.
_RUNTIME_FIELDS = ("device", "compile", "unpad", "log_every", "log_to")


class RunConflictError(ValueError):
    """``run_dir`` holds a run that :func:`train` may not continue as asked: ``kind`` is
    ``"exists"`` (``resume=False`` without ``overwrite``) or ``"config"`` (a different
    configuration)."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def check_training_inputs(
    model: torch.nn.Module,
    task: Task,
    config: TrainConfig,
    model_config: ModelConfig | ArchConfig | None,
    where: str = "",
) -> ModelConfig | ArchConfig | None:
    """Check that ``model`` can train on ``task`` under ``config`` (a ``TypeError`` or
    ``ValueError`` prefixed by ``where`` otherwise) and return the model config to save
    (``model_config`` or the one the builder attached to ``model``)."""
    if not isinstance(config, TrainConfig):
        raise TypeError(f"{where}config must be a TrainConfig, got {type(config).__name__}")
    if not isinstance(task, Task):
        raise TypeError(f"{where}task must be a hierlens Task, got {type(task).__name__}")
    if task.objective == "next_token" and is_bidirectional(model):
        raise ValueError(
            f"{where}task {task.name!r} trains next-token prediction, which a bidirectional "
            "model solves by looking ahead; use a causal model (attention_dir='causal')"
        )
    if config.loss_on == "sequence" and task.objective != "next_token":
        raise ValueError(
            f"{where}TrainConfig.loss_on='sequence' trains a language model on the whole "
            f"sequence; task {task.name!r} has objective {task.objective!r}, not 'next_token'"
        )
    model_config = model_config or getattr(model, "hierlens_config", None)
    if model_config is not None:
        if model_config.d_vocab < len(task.vocab):
            raise ValueError(
                f"{where}model d_vocab={model_config.d_vocab} < task vocabulary size "
                f"{len(task.vocab)}"
            )
        if model_config.n_ctx < task.max_len:
            raise ValueError(
                f"{where}model n_ctx={model_config.n_ctx} < task max_len {task.max_len}"
            )
    return model_config


def config_lr(config: TrainConfig, step: int) -> float:
    """The learning rate of the optimizer step from ``step`` to ``step + 1``."""
    return lr_at(
        step,
        base_lr=config.lr,
        total_steps=config.steps,
        warmup_steps=config.warmup_steps,
        schedule=config.schedule,
        min_lr_ratio=config.min_lr_ratio,
    )


def _comparable(cfg: dict[str, Any]) -> dict[str, Any]:
    cfg = {k: dict(v) if isinstance(v, dict) else v for k, v in cfg.items()}
    for f in _RUNTIME_FIELDS:
        cfg.get("train", {}).pop(f, None)
    return cfg


def holds_other_config(run: Run, config: dict[str, Any]) -> bool:
    """True when ``run`` has a ``config.json`` that :func:`~hierlens.models.train` would
    refuse to continue with ``config`` (a :func:`~hierlens.models.run.run_config_dict`): it
    differs in anything but the runtime fields (device, compile, unpad, logging)."""
    if not run.has(run.config_path):
        return False
    with run.confined():
        return _comparable(read_json(run.config_path)) != _comparable(config)


def prepare_run_dir(run: Run, config: dict[str, Any], resume: bool, overwrite: bool) -> None:
    """Check ``run`` against ``config`` (a different saved config is an error), clear it
    for ``overwrite`` (everything the old run wrote: checkpoints, metrics, trackers, and what
    was derived from its model: activations, SAEs, probes, tree scores, tracking, the report
    and figures), and write ``config.json``."""
    if run.exists and not resume:
        if not overwrite:
            raise RunConflictError(
                f"{run.path} already holds a run; pass resume=True to continue it or "
                "overwrite=True to delete it and start again",
                "exists",
            )
        clear_run(run.path)
        run._config = None
    elif holds_other_config(run, config):
        raise RunConflictError(
            f"{run.path} holds a run with a different configuration; use another run "
            "directory, or overwrite=True with resume=False to replace it",
            "config",
        )
    run.write_config(config)


def truncate_metrics(run: Run, step: int) -> None:
    """Drop metric records written after ``step`` (by an interrupted run being resumed); at
    step 0 every record goes, as the step-0 evaluation is made again."""
    path = run.metrics_path
    with run.confined():
        records = run.read_records(path, writer=True)
        kept = [r for r in records if r["step"] <= step] if step > 0 else []
        if len(kept) != len(records) or (run.has(path) and not records):
            write_checked_jsonl(path, kept)


def eval_sets(task: Task, config: TrainConfig) -> dict[str, list[Example]]:
    """The examples evaluated at every evaluation step, per split (none when evaluation
    is off)."""
    if not config.eval_steps:
        return {}
    return {s: task.sample(config.eval_n, s, config.seed + 7919) for s in config.eval_splits}


def open_tracker(
    run: Run,
    task: Task,
    model_config: ModelConfig | ArchConfig | None,
    config: TrainConfig,
    resume: bool,
    start: int,
) -> MultiLogger:
    """The experiment trackers of ``config.log_to`` for ``run`` (a no-op logger without)."""
    if not config.log_to:
        return MultiLogger()
    return make_logger(
        config.log_to,
        run.trackers("train"),
        name=run.path.name,
        params=run_config_dict(task, model_config, config),
        resume=resume,
        purge_step=start + 1 if start > 0 else 0,
    )


def train_record(step: int, loss: float, lr: float, tokens: int, seconds: float) -> dict:
    """The ``split="train"`` record of ``metrics.jsonl``: mean loss since the last record,
    the step's learning rate and real tokens trained per second."""
    return {
        "step": step,
        "split": "train",
        "loss": loss,
        "lr": lr,
        "tokens_per_s": tokens / max(seconds, 1e-9),
    }


def write_evaluation(
    run: Run, tracker: MultiLogger, step: int, metrics: dict[str, dict[str, float]]
) -> None:
    """Append one record per evaluated split (``{split: metrics}``) at ``step``."""
    records = [{"step": step, "split": split, **m} for split, m in metrics.items()]
    with run.confined():
        append_jsonl(run.metrics_path, records)
    tracker.log_records(records, "split")
