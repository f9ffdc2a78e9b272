"""Atomic, checksummed training checkpoints.

A checkpoint is a folder ``checkpoints/step_NNNNNNN/`` of a run directory (named by
:meth:`hierlens.models.Run.checkpoint_dir`) holding

- ``model.safetensors``: the model's ``state_dict`` (TransformerLens parameter names);
- ``state.safetensors``: the optimizer state (``optimizer.<key>``: the model's rows of a
  :meth:`hierlens.core.optim.StackedAdamW.state_dict`, step count and AdamW moments keyed by
  parameter name) and RNG states;
- ``state.json``: the step, any extra JSON state, and the sha256 of both tensor files.

It is written into a temporary folder beside the final one, fsynced, then renamed into place,
so a checkpoint folder either is complete or does not exist. Loading checks the checksums: a
truncated or modified file is a :class:`~hierlens.core.atomic_io.CorruptFileError` naming it.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hierlens.core.atomic_io import (
    CorruptFileError,
    _fsync_dir,
    atomic_write_json,
    load_tensors,
    read_json,
    save_tensors,
)

log = logging.getLogger(__name__)

STATE_FILE = "state.json"


@dataclass
class Checkpoint:
    """A loaded checkpoint: model weights, optimizer state (a
    :meth:`~hierlens.core.optim.StackedAdamW.state_dict`, ``None`` when none was saved), RNG
    states and extra state."""

    step: int
    path: Path
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, torch.Tensor] | None
    rng_state: dict[str, torch.Tensor] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(
    path: str | os.PathLike,
    step: int,
    model: torch.nn.Module,
    optimizer_state: Mapping[str, torch.Tensor] | None = None,
    extra: dict[str, Any] | None = None,
    save_rng: bool = True,
) -> Path:
    """Write the checkpoint for ``step`` atomically into the folder ``path`` (a run's
    :meth:`~hierlens.models.Run.checkpoint_dir`) and return it. ``optimizer_state``: the
    model's :meth:`~hierlens.core.optim.StackedAdamW.state_dict`."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    model_sha = save_tensors(tmp / "model.safetensors", dict(model.state_dict()))
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {"step": step, "extra": extra or {}}
    if optimizer_state is not None:
        tensors.update({f"optimizer.{k}": v.detach() for k, v in optimizer_state.items()})
        meta["optimizer"] = True
    if save_rng:
        tensors["rng.torch"] = torch.get_rng_state()
        if torch.cuda.is_available():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"rng.cuda.{i}"] = s
    state_sha = save_tensors(tmp / "state.safetensors", tensors)
    meta["sha256"] = {"model.safetensors": model_sha, "state.safetensors": state_sha}
    atomic_write_json(tmp / STATE_FILE, meta)
    if final.exists():  # re-saving the same step: move the old one aside first
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _fsync_dir(final.parent)
    return final


def load_checkpoint(
    path: str | os.PathLike, *, map_location: str | torch.device = "cpu"
) -> Checkpoint:
    """Load and verify a checkpoint folder.

    Raises :class:`CorruptFileError` naming the bad file (missing, truncated, checksum
    mismatch), so callers can report it and fall back to an earlier checkpoint.
    """
    path = Path(path)
    meta_path = path / STATE_FILE
    if not meta_path.exists():
        raise CorruptFileError(f"{meta_path}: missing (incomplete checkpoint)")
    meta = read_json(meta_path)
    try:
        sums = meta["sha256"]
        step = int(meta["step"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptFileError(f"{meta_path}: malformed checkpoint metadata") from exc
    files = {}
    for name in ("model.safetensors", "state.safetensors"):
        fpath = path / name
        if not fpath.exists():
            raise CorruptFileError(f"{fpath}: missing")
        files[name] = load_tensors(fpath, expected_sha256=sums.get(name))
    state = files["state.safetensors"]
    model_state = {k: v.to(map_location) for k, v in files["model.safetensors"].items()}
    optimizer_state = None
    if meta.get("optimizer"):
        n = len("optimizer.")
        optimizer_state = {k[n:]: v for k, v in state.items() if k.startswith("optimizer.")}
    rng = {k: v for k, v in state.items() if k.startswith("rng.")}
    return Checkpoint(step, path, model_state, optimizer_state, rng, meta.get("extra", {}))


def restore_rng(rng_state: dict[str, torch.Tensor]) -> None:
    """Restore the torch (and CUDA) RNG states saved in a checkpoint."""
    if "rng.torch" in rng_state:
        torch.set_rng_state(rng_state["rng.torch"])
    cuda = sorted(k for k in rng_state if k.startswith("rng.cuda."))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([rng_state[k] for k in cuda])
