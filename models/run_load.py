"""Loading what a run directory holds: its config, its checkpoints, its model.

:func:`latest_valid_checkpoint` finds the newest checkpoint that verifies; :func:`load_model`
builds the model of a checkpoint (or loads a pretrained run's model); :func:`model_id` names
the model a store was captured from. The layout is :mod:`~hierlens.models.run_layout`'s, the
writer lock :mod:`~hierlens.models.run_lock`'s; :class:`~hierlens.models.run.Run` joins them.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hierlens.core.checksums import CorruptFileError

from .architectures import ArchConfig, build_model
from .checkpoint import Checkpoint, load_checkpoint, read_checkpoint_meta
from .corpus import Corpus
from .run_layout import PRETRAINED, PRETRAINED_STEP, SPECIAL_TOKENS, RunLayout
from .special_tokens import SpecialTokens
from .tasks.base import Task
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
    "pretrained_run_config",
    "run_config_dict",
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


def pretrained_run_config(
    model_path: str | os.PathLike,
    corpus: Corpus,
    special_tokens: SpecialTokens | str | None = None,
) -> dict[str, Any]:
    """The ``config.json`` of a run that analyses the pretrained model in the local folder
    ``model_path`` on ``corpus``, its sentences framed by ``special_tokens`` (a policy or a
    :class:`~hierlens.models.special_tokens.SpecialTokens`; None: the default policy),
    resolved to token ids with the folder's tokenizer and stored under
    ``"special_tokens"``."""
    from .pretrained import load_tokenizer

    folder = Path(model_path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"no folder at {str(model_path)!r}: only local Hugging Face folders load"
        )
    if not isinstance(special_tokens, SpecialTokens):
        special_tokens = (
            SpecialTokens() if special_tokens is None else SpecialTokens(special_tokens)
        )
    frame = special_tokens.resolve(load_tokenizer(folder))
    return {
        PRETRAINED: {"path": str(folder.resolve())},
        "data": corpus.to_dict(),
        SPECIAL_TOKENS: frame.to_dict(),
    }


def checkpoint_path(run_dir: str | os.PathLike, step: int) -> Path:
    """``run_dir/checkpoints/step_NNNNNNN`` (:meth:`Run.checkpoint_dir`)."""
    return RunLayout(run_dir).checkpoint_dir(step)


def list_checkpoints(run_dir: str | os.PathLike) -> list[int]:
    """Steps of the checkpoint folders in ``run_dir`` (complete by construction), sorted."""
    return RunLayout(run_dir).steps


def latest_valid_checkpoint(
    run_dir: str | os.PathLike, *, map_location: str | torch.device = "cpu"
) -> Checkpoint | None:
    """The newest checkpoint that loads and verifies; corrupt ones are reported (by path, at
    WARNING level) and skipped for the previous good one. ``None`` when there is none."""
    run = RunLayout(run_dir)
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


def model_id(run: RunLayout, step: int) -> dict[str, Any]:
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
    run: Any, step: int | None = None, device: str | torch.device | None = None
) -> TransformerBridge | torch.nn.Module:
    """The model of the :class:`~hierlens.models.run.Run` ``run`` at checkpoint ``step``
    (default: the newest valid checkpoint)."""
    from hierlens.core.device import resolve_device

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
