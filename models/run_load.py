"""Loading what a run directory holds: opening a run, its config, its checkpoints, its model.

:func:`open_run` opens an existing run and checks its ``config.json``;
:func:`latest_valid_checkpoint` finds the newest checkpoint that verifies; :func:`load_model`
builds the model of a checkpoint (or loads a pretrained run's model). The layout itself is
:class:`~hierlens.models.run.Run`'s; the writer lock is :mod:`~hierlens.models.run_lock`'s.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from . import confined_io as fs
from .architectures import ArchConfig, build_model
from .atomic_io import CorruptFileError, read_json
from .checkpoint import Checkpoint, load_checkpoint, read_checkpoint_meta
from .checksums import CHECKSUMS
from .corpus import Corpus
from .run import CONFIG, PRETRAINED, PRETRAINED_STEP, Run
from .run_lock import LOCK_FILE
from .tasks import Task
from .train_config import TrainConfig
from .transformer import ModelConfig, build_transformer

if TYPE_CHECKING:  # pragma: no cover
    from transformer_lens.model_bridge import TransformerBridge

log = logging.getLogger(__name__)

__all__ = [
    "checkpoint_path",
    "latest_valid_checkpoint",
    "list_checkpoints",
    "load_model",
    "model_config_from_dict",
    "model_id",
    "open_or_create_run",
    "open_run",
    "pretrained_run_config",
    "run_config_dict",
    "write_run_config",
]


def run_config_dict(
    task: Task, model_config: ModelConfig | ArchConfig | None, train_config: TrainConfig | None
) -> dict[str, Any]:
    """The JSON object saved as a run's ``config.json`` (``model`` and ``train`` only when
    given). A TL-native transformer's ``model`` is a :class:`ModelConfig`; a model of the
    architecture families (:class:`~hierlens.models.architectures.ArchConfig`) is told apart
    by its ``"arch"`` key."""
    out: dict[str, Any] = {"task": {"name": task.name, "params": task.to_dict()}}
    if model_config is not None:
        out["model"] = model_config.to_dict()
    if train_config is not None:
        out["train"] = train_config.to_dict()
    return out


def model_config_from_dict(d: dict[str, Any]) -> ModelConfig | ArchConfig:
    """A run's model config from its ``config.json`` entry: ``"arch"`` selects
    :class:`~hierlens.models.architectures.ArchConfig`, otherwise :class:`ModelConfig`."""
    if not isinstance(d, dict):
        raise ValueError(f"config.json 'model' must be an object, got {type(d).__name__}")
    return ArchConfig.from_dict(d) if "arch" in d else ModelConfig.from_dict(d)


def pretrained_run_config(model_path: str | os.PathLike, corpus: Corpus) -> dict[str, Any]:
    """The ``config.json`` of a run that analyses the pretrained model in the local folder
    ``model_path`` on ``corpus``."""
    folder = Path(model_path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(
            errno.ENOENT,
            f"no folder at {str(model_path)!r}: only local Hugging Face folders load",
            str(model_path),
        )
    return {PRETRAINED: {"path": str(folder.resolve())}, "data": corpus.to_dict()}


def write_run_config(run_dir: str | os.PathLike, config: dict[str, Any]) -> None:
    """Write ``config`` as the ``config.json`` of ``run_dir`` (atomically)."""
    Run(run_dir).write_config(config)


def open_or_create_run(run_dir: str | os.PathLike, config: dict[str, Any]) -> Run:
    """The run in ``run_dir`` with ``config``: created if there is none; an existing run
    with the same config is opened. A run with another config is an error, unless it holds
    nothing but its config (a command that failed before writing a result, whose corrected
    retry then replaces it)."""
    run = Run(run_dir)
    with run.lock():
        if run.has(run.config_path):
            try:
                same = open_run(run).config == config
            except (CorruptFileError, ValueError):
                same = False
            if not same:
                extra = set(fs.entries(run.path)) - {CONFIG, CHECKSUMS, LOCK_FILE}
                if extra:
                    raise ValueError(
                        f"{run.path} already holds another run; choose another run directory"
                    )
                log.info("%s held only the config of a failed attempt; replacing it", run.path)
                run.write_config(config)
        else:
            run.write_config(config)
    return open_run(run.path)


def _not_a_run(run: Run) -> FileNotFoundError:
    """The error for a folder without ``config.json`` (naming the missing file)."""
    return FileNotFoundError(
        errno.ENOENT,
        f"{run.path} is not a hierlens run directory (no {CONFIG})",
        str(run.config_path),
    )


def open_run(run_dir: str | os.PathLike | Run) -> Run:
    """Open an existing run directory (written by :func:`hierlens.models.train`), checking
    that its ``config.json`` names a task and a model."""
    run = run_dir if isinstance(run_dir, Run) else Run(run_dir)
    if not run.has(run.config_path):
        raise _not_a_run(run)
    with run.confined():
        config = read_json(run.config_path)
    trained = isinstance(config, dict) and "task" in config and "model" in config
    pretrained = isinstance(config, dict) and PRETRAINED in config and "data" in config
    if not (trained or pretrained):
        raise ValueError(
            f"{run.config_path}: expected keys 'task' and 'model' (a trained run) or "
            f"'{PRETRAINED}' and 'data' (a pretrained model on a corpus)"
        )
    return Run(run.path, config)


def checkpoint_path(run_dir: str | os.PathLike, step: int) -> Path:
    """``run_dir/checkpoints/step_NNNNNNN`` (:meth:`Run.checkpoint_dir`)."""
    return Run(run_dir).checkpoint_dir(step)


def list_checkpoints(run_dir: str | os.PathLike) -> list[int]:
    """Steps of the checkpoint folders in ``run_dir`` (complete by construction), sorted."""
    return Run(run_dir).steps


def latest_valid_checkpoint(
    run_dir: str | os.PathLike, *, map_location: str | torch.device = "cpu"
) -> Checkpoint | None:
    """The newest checkpoint that loads and verifies; corrupt ones are reported (by path, at
    WARNING level) and skipped for the previous good one. ``None`` when there is none."""
    run = Run(run_dir)
    with run.confined():
        for step in reversed(run.steps):
            path = run.checkpoint_dir(step)
            try:
                return load_checkpoint(path, map_location=map_location, step=step)
            except CorruptFileError as exc:
                log.warning("skipping corrupt checkpoint %s: %s", path, exc)
    return None


def _hash_plain(path: Path) -> str:
    """sha256 of a file of a user's model folder (outside any run directory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_id(run: Run, step: int) -> dict[str, Any]:
    """What identifies the model at ``step`` in the stores captured from it: the run's
    config and the checksum of the checkpoint's weights (trained runs), or the folder and
    the checksums of its weight files (pretrained runs)."""
    if run.is_pretrained:
        folder = Path(run.config[PRETRAINED]["path"])
        weights = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".pt"))
        return {
            PRETRAINED: str(folder),
            "step": step,
            "weights_sha256": {p.name: _hash_plain(p) for p in weights},
        }
    with run.confined():
        state = read_checkpoint_meta(run.checkpoint_dir(step), step=step)
    return {"run": run.config, "step": step, "weights_sha256": state["sha256"]["model.safetensors"]}


def load_model(
    run: Run, step: int | None = None, device: str | torch.device | None = None
) -> TransformerBridge | torch.nn.Module:
    """The model of ``run`` at checkpoint ``step`` (default: the newest valid checkpoint)."""
    from .device import resolve_device

    dev = resolve_device(device)
    if run.is_pretrained:
        if step not in (None, PRETRAINED_STEP):
            raise ValueError(f"{run.path}: a pretrained model has only step {PRETRAINED_STEP}")
        return run.pretrained(dev).model
    if step is None:
        ckpt = latest_valid_checkpoint(run.path)
        if ckpt is None:
            raise FileNotFoundError(
                errno.ENOENT, f"{run.path}: no valid checkpoint", str(run.checkpoints_dir)
            )
    else:
        if step not in run.steps:
            raise ValueError(
                f"{run.path}: no checkpoint at step {step}; available steps: {run.steps}"
            )
        with run.confined():
            ckpt = load_checkpoint(run.checkpoint_dir(step), step=step)
    config = run.model_config
    if isinstance(config, ArchConfig):
        model = build_model(config).to(dev)
    else:
        model = build_transformer(config, device=dev)
    model.load_state_dict(ckpt.model_state)
    model.eval()
    return model
