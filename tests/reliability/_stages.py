"""What the fault-injection tests run in child processes: tiny train, capture, SAE-fitting and
pipeline stages, and a hook that kills the process (SIGKILL) at its N-th file event.

A file event is a call of ``os.replace`` or ``os.fsync``: every atomic write, checkpoint
rename and JSONL append goes through both, so "the N-th event" names a point between two
steps of a write, anywhere in a stage, reproducibly.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import torch

from tests.tiny_configs import analysis_sections

TASK_PARAMS = {"max_depth": 4, "min_length": 4, "max_length": 10}
HOOKS = ["blocks.*.hook_resid_post"]
TRAIN = {
    "steps": 20,
    "batch_size": 8,
    "warmup_steps": 2,
    "log_every": 5,
    "eval_every": 10,
    "eval_n": 16,
    "checkpoint_every": 10,
    "train_pool": 100,
    "device": "cpu",
}
MODEL = {"d_model": 16, "n_layers": 1, "n_heads": 2}


def pipeline_config(out_dir: str) -> dict[str, Any]:
    return {
        "name": "p",
        "out_dir": out_dir,
        "task": {"name": "dyck", "params": TASK_PARAMS},
        "model": MODEL,
        "train": TRAIN,
        "capture": {"hooks": HOOKS, "n": 16},
        **analysis_sections("blocks.0.hook_resid_post", ["topk"]),
    }


def _train(run_dir: str) -> None:
    from hierlens.models import ModelConfig, TrainConfig, build_transformer, get_task, train

    task = get_task("dyck", **TASK_PARAMS)
    model_config = ModelConfig.for_task(task, seed=0, **MODEL)
    model = build_transformer(model_config, device="cpu")
    train(model, task, TrainConfig(**TRAIN), run_dir, model_config=model_config, progress=False)


def _capture(run_dir: str) -> None:
    from hierlens.models import capture_checkpoints

    capture_checkpoints(run_dir, HOOKS, n=16, batch_size=4, shard_bytes=2048, progress=False)


def _sae(run_dir: str) -> None:
    from hierlens.analysis.cli import main

    argv = [
        "fit-sae", run_dir, "--hook", "blocks.0.hook_resid_post", "--widths", "8,16",
        "--ks", "2", "--steps", "5", "--batch-size", "32", "--n", "16", "--no-progress",
    ]  # fmt: skip
    status = main(argv)
    if status:
        raise SystemExit(status)


def _pipeline(run_dir: str) -> None:
    from hierlens.analysis.pipeline import run

    run(pipeline_config(str(Path(run_dir).parent)), progress=False)


STAGES = {"train": _train, "capture": _capture, "sae": _sae, "pipeline": _pipeline}


def run_stage(kind: str, run_dir: str, kill_at: int, count_file: str) -> None:
    """Run stage ``kind`` on ``run_dir``; with ``kill_at > 0`` SIGKILL this process at that
    file event. Writes the number of events to ``count_file`` when it finishes."""
    torch.set_num_threads(1)
    real_replace, real_fsync = os.replace, os.fsync
    count = [0]

    def tick() -> None:
        count[0] += 1
        if count[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    def replace(*args: Any, **kwargs: Any) -> None:
        tick()
        real_replace(*args, **kwargs)

    def fsync(fd: int) -> None:
        tick()
        real_fsync(fd)

    os.replace, os.fsync = replace, fsync
    try:
        STAGES[kind](run_dir)
    finally:
        os.replace, os.fsync = real_replace, real_fsync
    Path(count_file).write_text(json.dumps(count[0]))
