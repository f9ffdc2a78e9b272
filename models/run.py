"""A run directory: the config that produced it, its metrics and its checkpoints.

```
runs/<name>/
  config.json      # {"task": {"name", "params"}, "model": ModelConfig, "train": TrainConfig}
  metrics.jsonl    # one JSON object per log/eval: step, split, metric values
  checkpoints/step_NNNNNNN/
```
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .atomic_io import atomic_write_json, read_json, read_jsonl
from .checkpoint import checkpoint_path, latest_valid_checkpoint, list_checkpoints, load_checkpoint
from .tasks import Task, get_task
from .transformer import ModelConfig, build_transformer

if TYPE_CHECKING:  # pragma: no cover
    from transformer_lens.model_bridge import TransformerBridge

    from .train import TrainConfig

CONFIG = "config.json"
METRICS = "metrics.jsonl"


def run_config_dict(
    task: Task, model_config: ModelConfig, train_config: TrainConfig | None
) -> dict[str, Any]:
    """The JSON object saved as a run's ``config.json``."""
    out: dict[str, Any] = {
        "task": {"name": task.name, "params": task.to_dict()},
        "model": model_config.to_dict(),
    }
    if train_config is not None:
        out["train"] = train_config.to_dict()
    return out


def write_run_config(run_dir: str | os.PathLike, config: dict[str, Any]) -> None:
    atomic_write_json(Path(run_dir) / CONFIG, config)


@dataclass
class Run:
    """A run directory opened for reading: its task, model config, checkpoints and metrics."""

    path: Path
    config: dict[str, Any]

    @property
    def task(self) -> Task:
        t = self.config["task"]
        return get_task(t["name"], **t.get("params", {}))

    @property
    def model_config(self) -> ModelConfig:
        return ModelConfig.from_dict(self.config["model"])

    @property
    def train_config(self) -> TrainConfig | None:
        from .train import TrainConfig

        return TrainConfig.from_dict(self.config["train"]) if "train" in self.config else None

    @property
    def steps(self) -> list[int]:
        """Steps that have a checkpoint."""
        return list_checkpoints(self.path)

    def metrics(self, split: str | None = None) -> list[dict[str, Any]]:
        """Records of ``metrics.jsonl`` (only those of ``split`` when given)."""
        records = read_jsonl(self.path / METRICS)
        return [r for r in records if split is None or r.get("split") == split]

    def load_model(
        self, step: int | None = None, device: str | torch.device | None = None
    ) -> TransformerBridge:
        """The model at checkpoint ``step`` (default: the newest valid checkpoint)."""
        from .device import resolve_device

        dev = resolve_device(device)
        if step is None:
            ckpt = latest_valid_checkpoint(self.path)
            if ckpt is None:
                raise FileNotFoundError(f"{self.path}: no valid checkpoint")
        else:
            if step not in self.steps:
                raise ValueError(
                    f"{self.path}: no checkpoint at step {step}; available steps: {self.steps}"
                )
            ckpt = load_checkpoint(checkpoint_path(self.path, step))
        model = build_transformer(self.model_config, device=dev)
        model.load_state_dict(ckpt.model_state)
        model.eval()
        return model


def open_run(run_dir: str | os.PathLike) -> Run:
    """Open a run directory written by :func:`hierlens.models.train`."""
    path = Path(run_dir)
    cfg_path = path / CONFIG
    if not cfg_path.exists():
        raise FileNotFoundError(f"{path} is not a hierlens run directory (no {CONFIG})")
    config = read_json(cfg_path)
    if not isinstance(config, dict) or "task" not in config or "model" not in config:
        raise ValueError(f"{cfg_path}: expected keys 'task' and 'model'")
    return Run(path, config)
