"""The training loop: next-token (or masked-target) cross-entropy on a task, with exact resume.

One loop serves CPU and GPU. Batches are gathered as tensor slices of a pre-sampled pool of
training examples; the rows of step ``s`` are a pure function of ``(seed, s)``, and the
learning rate a pure function of ``s``, so resuming from a checkpoint (weights, optimizer
state, RNG state) reproduces an uninterrupted run bit for bit on CPU (with the same number of torch
threads: the order of floating-point reductions depends on it). Inside a step nothing
waits for the device: the loss is accumulated on the device and read every ``log_every``
steps. On CUDA the loop uses fused AdamW, bf16 autocast (``amp=True``), pinned host memory
with non-blocking copies, and optionally ``torch.compile``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .atomic_io import append_jsonl, atomic_write_jsonl_records, read_jsonl
from .checkpoint import CHECKPOINTS, latest_valid_checkpoint, restore_rng, save_checkpoint
from .config import Config
from .device import resolve_device
from .fast_forward import training_forward
from .forward import is_bidirectional
from .run import CONFIG, METRICS, run_config_dict, write_run_config
from .schedule import SCHEDULES, lr_at, scheduled_steps
from .tasks.base import IGNORE_INDEX, SPLITS, Task, pad_examples
from .transformer import ModelConfig

log = logging.getLogger(__name__)

# Fields that may differ between an interrupted run and its resumption.
_RUNTIME_FIELDS = ("device", "compile", "log_every")
LOSS_ON = ("targets", "sequence")


@dataclasses.dataclass(frozen=True)
class TrainConfig(Config):
    """Training hyper-parameters and schedules.

    Parameters:
        steps: number of optimizer steps.
        batch_size: sequences per step.
        lr, warmup_steps, schedule, min_lr_ratio: peak learning rate, linear warmup, then
            "cosine", "linear" or "constant" to ``min_lr_ratio * lr``.
        betas, weight_decay: AdamW (weight decay on matrices only, not on biases/norms).
        grad_clip: global gradient-norm clip (None: off).
        log_every: steps between training-loss records (the only host-device sync).
        eval_every, eval_log_points: evaluation every N steps and/or at this many log-spaced
            steps (plus step 0 and the last step when either is set).
        eval_n, eval_splits: examples per split and which splits to evaluate.
        checkpoint_every, checkpoint_log_points: checkpoints every N steps and/or at
            log-spaced steps; the last step is always checkpointed.
        train_pool: number of training examples sampled once and drawn from with replacement.
        seed: seeds the training pool, the batch order and the RNG.
        device: "cpu", "cuda", ... (None: CUDA when available).
        amp: bf16 autocast on CUDA (ignored on CPU).
        compile: wrap the model in ``torch.compile``.
        loss_on: ``"targets"`` trains only the positions the task gives a target (for the
            transduction tasks, the output after the marker); ``"sequence"`` trains a language
            model on every position (the next token of the whole padded-free sequence), as
            Murty et al. (2023) train question formation and tense inflection. Needs a
            next-token task. Evaluation always uses the task's own targets.
    """

    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 100
    schedule: str = "cosine"
    min_lr_ratio: float = 0.1
    betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = 0.01
    grad_clip: float | None = 1.0
    log_every: int = 50
    eval_every: int = 500
    eval_log_points: int = 0
    eval_n: int = 500
    eval_splits: tuple[str, ...] = ("test_id", "test_ood")
    checkpoint_every: int = 500
    checkpoint_log_points: int = 0
    train_pool: int = 20_000
    seed: int = 0
    device: str | None = None
    amp: bool = True
    compile: bool = False
    loss_on: str = "targets"

    def __post_init__(self) -> None:
        positive = ("steps", "batch_size", "log_every", "eval_n", "train_pool")
        for name in positive:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"TrainConfig.{name} must be a positive integer, got {v!r}")
        for name in (
            "warmup_steps",
            "eval_every",
            "eval_log_points",
            "checkpoint_every",
            "checkpoint_log_points",
        ):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"TrainConfig.{name} must be a non-negative integer, got {v!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"TrainConfig.lr must be positive, got {self.lr!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"TrainConfig.schedule must be one of {SCHEDULES}, got {self.schedule!r}"
            )
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(
                f"TrainConfig.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}"
            )
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"TrainConfig.betas must be two numbers in [0, 1), got {self.betas!r}")
        if self.weight_decay < 0:
            raise ValueError(f"TrainConfig.weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(
                f"TrainConfig.grad_clip must be positive or None, got {self.grad_clip!r}"
            )
        if self.loss_on not in LOSS_ON:
            raise ValueError(f"TrainConfig.loss_on must be one of {LOSS_ON}, got {self.loss_on!r}")
        bad = [s for s in self.eval_splits if s not in SPLITS]
        if bad:
            raise ValueError(
                f"TrainConfig.eval_splits: unknown split(s) {bad}; expected a subset of {SPLITS}"
            )

    @property
    def eval_steps(self) -> list[int]:
        if self.eval_every == 0 and self.eval_log_points == 0:
            return []
        return scheduled_steps(self.steps, self.eval_every, self.eval_log_points, include_zero=True)

    @property
    def checkpoint_steps(self) -> list[int]:
        return scheduled_steps(self.steps, self.checkpoint_every, self.checkpoint_log_points)


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns: where the run lives and where it stopped."""

    run_dir: Path
    step: int
    train_loss: float | None
    eval: dict[str, dict[str, float]]


def next_token_targets(tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Language-model targets for padded ``(N, T)`` tokens: position ``t`` predicts token
    ``t + 1``; the last real position and the padding get :data:`IGNORE_INDEX`."""
    targets = torch.full_like(tokens, IGNORE_INDEX)
    targets[:, :-1] = tokens[:, 1:]
    pos = torch.arange(tokens.shape[1])
    targets[pos[None, :] >= (lengths[:, None] - 1)] = IGNORE_INDEX
    return targets


class BatchSampler:
    """Draws training batches from a padded pool of examples; the rows of step ``s`` are a
    pure function of ``(seed, s)`` and each batch is cut to its longest sequence."""

    def __init__(self, task: Task, config: TrainConfig, device: torch.device):
        examples = task.sample(config.train_pool, "train", config.seed)
        pool = pad_examples(examples, task.pad_id)
        targets = pool.targets
        if config.loss_on == "sequence":
            targets = next_token_targets(pool.tokens, pool.lengths)
        pin = device.type == "cuda"
        self.tokens = pool.tokens.pin_memory() if pin else pool.tokens
        self.targets = targets.pin_memory() if pin else targets
        self.lengths = pool.lengths.numpy()
        self.seed = config.seed
        self.batch_size = config.batch_size
        self.device = device

    def rows(self, step: int) -> np.ndarray:
        return np.random.default_rng([self.seed, step, 0xBA7C]).integers(
            0, len(self.lengths), self.batch_size
        )

    def __call__(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """``(tokens, targets, attention_mask, n_tokens)`` on the device for ``step``."""
        rows = self.rows(step)
        lengths = self.lengths[rows]
        width = int(lengths.max())
        idx = torch.from_numpy(rows)
        tokens = self.tokens[idx, :width]
        targets = self.targets[idx, :width]
        if self.device.type == "cuda":
            tokens, targets = tokens.pin_memory(), targets.pin_memory()
        mask = torch.arange(width)[None, :] < torch.from_numpy(lengths)[:, None]
        nb = self.device.type == "cuda"
        return (
            tokens.to(self.device, non_blocking=nb),
            targets.to(self.device, non_blocking=nb),
            mask.to(self.device, non_blocking=nb),
            int(lengths.sum()),
        )


def make_optimizer(
    model: torch.nn.Module, config: TrainConfig, device: torch.device
) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only; fused on CUDA."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    kwargs: dict[str, Any] = {"lr": config.lr, "betas": tuple(config.betas)}
    if device.type == "cuda":
        kwargs["fused"] = True
    return torch.optim.AdamW(groups, **kwargs)


def _comparable(cfg: dict[str, Any]) -> dict[str, Any]:
    cfg = {k: dict(v) if isinstance(v, dict) else v for k, v in cfg.items()}
    for f in _RUNTIME_FIELDS:
        cfg.get("train", {}).pop(f, None)
    return cfg


def _prepare_run_dir(run_dir: Path, config: dict[str, Any], resume: bool, overwrite: bool) -> None:
    from .atomic_io import read_json

    cfg_path = run_dir / CONFIG
    has_run = cfg_path.exists() or (run_dir / CHECKPOINTS).exists()
    if has_run and not resume:
        if not overwrite:
            raise ValueError(
                f"{run_dir} already holds a run; pass resume=True to continue it or "
                "overwrite=True to delete it and start again"
            )
        for name in (CHECKPOINTS,):
            shutil.rmtree(run_dir / name, ignore_errors=True)
        for name in (CONFIG, METRICS):
            (run_dir / name).unlink(missing_ok=True)
    elif has_run and cfg_path.exists():
        saved = read_json(cfg_path)
        if _comparable(saved) != _comparable(config):
            raise ValueError(
                f"{run_dir} holds a run with a different configuration; use another run "
                "directory, or overwrite=True with resume=False to replace it"
            )
    run_dir.mkdir(parents=True, exist_ok=True)
    write_run_config(run_dir, config)


def _truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop metric records written after ``step`` (by an interrupted run being resumed)."""
    path = run_dir / METRICS
    records = read_jsonl(path)
    kept = [r for r in records if r.get("step", 0) <= step]
    if len(kept) != len(records) or (path.exists() and len(records) == 0 and path.stat().st_size):
        atomic_write_jsonl_records(path, kept)


def train(
    model: torch.nn.Module,
    task: Task,
    config: TrainConfig,
    run_dir: str | os.PathLike,
    *,
    model_config: ModelConfig | None = None,
    resume: bool = True,
    overwrite: bool = False,
    progress: bool = True,
    stop_at: int | None = None,
    callback: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train ``model`` on ``task`` and write the run directory.

    Loss: cross-entropy between the logits at each position and ``targets`` there (the next
    token for language-model tasks; masked positions for masked tasks), averaged over trained
    positions. Writes ``config.json``, ``metrics.jsonl`` (``split="train"`` records with
    loss, lr and tokens/s; one record per evaluated split) and atomic checkpoints.

    Args:
        model: a model from :func:`~hierlens.models.build_transformer` (or any module
            mapping ``(B, T)`` tokens to ``(B, T, d_vocab)`` logits).
        model_config: saved in ``config.json`` so the run can be reloaded (taken from the
            model when it was built by ``build_transformer``).
        resume: continue from the newest valid checkpoint in ``run_dir`` (corrupt
            checkpoints are reported and skipped). With ``resume=False`` an existing run is
            an error unless ``overwrite=True``.
        stop_at: stop after this step as if interrupted (resume later to continue).
        callback: called with the step number after every optimizer step.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if not isinstance(task, Task):
        raise TypeError(f"task must be a hierlens Task, got {type(task).__name__}")
    if task.objective == "next_token" and is_bidirectional(model):
        raise ValueError(
            f"task {task.name!r} trains next-token prediction, which a bidirectional model solves "
            "by looking ahead; use a causal model (attention_dir='causal')"
        )
    if config.loss_on == "sequence" and task.objective != "next_token":
        raise ValueError(
            f"TrainConfig.loss_on='sequence' trains a language model on the whole sequence; "
            f"task {task.name!r} has objective {task.objective!r}, not 'next_token'"
        )
    model_config = model_config or getattr(model, "hierlens_config", None)
    if model_config is not None:
        if model_config.d_vocab < len(task.vocab):
            raise ValueError(
                f"model d_vocab={model_config.d_vocab} < task vocabulary size {len(task.vocab)}"
            )
        if model_config.n_ctx < task.max_len:
            raise ValueError(f"model n_ctx={model_config.n_ctx} < task max_len {task.max_len}")
    device = resolve_device(config.device)
    run_dir = Path(run_dir)
    run_cfg = (
        run_config_dict(task, model_config, config)
        if model_config
        else {
            "task": {"name": task.name, "params": task.to_dict()},
            "train": config.to_dict(),
        }
    )
    _prepare_run_dir(run_dir, run_cfg, resume, overwrite)

    model.to(device)
    optimizer = make_optimizer(model, config, device)
    start = 0
    if resume:
        ckpt = latest_valid_checkpoint(run_dir, map_location=device)
        if ckpt is not None:
            model.load_state_dict(ckpt.model_state)
            if ckpt.optimizer_state is not None:
                optimizer.load_state_dict(ckpt.optimizer_state)
            restore_rng(ckpt.rng_state)
            start = ckpt.step
            log.info("resuming %s from step %d", run_dir, start)
    _truncate_metrics(run_dir, start)
    if start >= config.steps:
        return TrainResult(run_dir, start, None, {})

    sampler = BatchSampler(task, config, device)
    eval_steps = set(config.eval_steps)
    eval_sets = {
        s: task.sample(config.eval_n, s, config.seed + 7919)
        for s in config.eval_splits
        if eval_steps
    }
    ckpt_steps = set(config.checkpoint_steps)
    forward = training_forward(model)
    if config.compile:
        forward = torch.compile(forward)
    use_amp = config.amp and device.type == "cuda"
    last_eval: dict[str, dict[str, float]] = {}
    last_loss: float | None = None

    def evaluate(step: int) -> None:
        records = []
        for split, examples in eval_sets.items():
            metrics = task.evaluate(model, split, examples=examples, device=device)
            last_eval[split] = metrics
            records.append({"step": step, "split": split, **metrics})
        append_jsonl(run_dir / METRICS, records)

    if start == 0 and 0 in eval_steps:
        evaluate(0)

    model.train()
    loss_sum = torch.zeros((), device=device)
    n_loss = 0
    tokens_seen = 0
    t_last = time.perf_counter()
    bar = tqdm(
        total=config.steps,
        initial=start,
        disable=not progress,
        desc=f"train {task.name}",
        leave=False,
    )
    step = start
    try:
        while step < config.steps:
            tokens, targets, mask, n_tokens = sampler(step)
            lr = lr_at(
                step,
                base_lr=config.lr,
                total_steps=config.steps,
                warmup_steps=config.warmup_steps,
                schedule=config.schedule,
                min_lr_ratio=config.min_lr_ratio,
            )
            for group in optimizer.param_groups:
                group["lr"] = lr
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = forward(tokens, mask)
            loss = F.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]),
                targets.reshape(-1),
                ignore_index=IGNORE_INDEX,
            )
            loss.backward()
            if config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip, foreach=True)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            loss_sum += loss.detach()
            n_loss += 1
            tokens_seen += n_tokens
            bar.update(1)

            if step % config.log_every == 0 or step == config.steps:
                now = time.perf_counter()
                last_loss = float(loss_sum) / n_loss
                append_jsonl(
                    run_dir / METRICS,
                    [
                        {
                            "step": step,
                            "split": "train",
                            "loss": last_loss,
                            "lr": lr,
                            "tokens_per_s": tokens_seen / max(now - t_last, 1e-9),
                        }
                    ],
                )
                bar.set_postfix(loss=f"{last_loss:.4f}")
                loss_sum.zero_()
                n_loss, tokens_seen, t_last = 0, 0, now
            if step in eval_steps:
                evaluate(step)
                model.train()
            if step in ckpt_steps:
                save_checkpoint(run_dir, step, model, optimizer, extra={"train_loss": last_loss})
            if callback is not None:
                callback(step)
            if stop_at is not None and step >= stop_at:
                break
    finally:
        bar.close()
    model.eval()
    return TrainResult(run_dir, step, last_loss, last_eval)
