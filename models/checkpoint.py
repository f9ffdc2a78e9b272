"""Atomic, checksummed training checkpoints.

A checkpoint is a folder ``checkpoints/step_NNNNNNN/`` of a run directory (named by
:meth:`hierlens.models.Run.checkpoint_dir`) holding

- ``model.safetensors``: the model's ``state_dict`` (TransformerLens parameter names);
- ``state.safetensors``: optimizer tensors and RNG states;
- ``state.json``: the step, the optimizer's hyper-parameters, any extra JSON state, and the
  sha256 of both tensor files.

It is written into a temporary folder beside the final one, fsynced, then renamed into place,
so a checkpoint folder either is complete or does not exist. Loading checks the checksums: a
truncated or modified file is a :class:`~hierlens.core.atomic_io.CorruptFileError` naming it.
"""

from __future__ import annotations

import logging
import os
import shutil
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
    """A loaded checkpoint: model weights, optimizer state dict and extra state."""

    step: int
    path: Path
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any] | None
    rng_state: dict[str, torch.Tensor] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, per_param in state["state"].items():
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{idx}.{key}"] = value
            else:
                scalars.setdefault(str(idx), {})[key] = value
    groups = []
    for g in state["param_groups"]:
        groups.append({k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()})
    return tensors, {"param_groups": groups, "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for idx, scalars in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(scalars)
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


def save_checkpoint(
    path: str | os.PathLike,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    extra: dict[str, Any] | None = None,
    save_rng: bool = True,
) -> Path:
    """Write the checkpoint for ``step`` atomically into the folder ``path`` (a run's
    :meth:`~hierlens.models.Run.checkpoint_dir`) and return it."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    model_sha = save_tensors(tmp / "model.safetensors", dict(model.state_dict()))
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {"step": step, "extra": extra or {}}
    if optimizer is not None:
        opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
        tensors.update(opt_tensors)
        meta["optimizer"] = opt_meta
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
    optimizer_state = (
        _unflatten_optimizer(state, meta["optimizer"]) if "optimizer" in meta else None
    )
    rng = {k: v for k, v in state.items() if k.startswith("rng.")}
    return Checkpoint(step, path, model_state, optimizer_state, rng, meta.get("extra", {}))


def restore_rng(rng_state: dict[str, torch.Tensor]) -> None:
    """Restore the torch (and CUDA) RNG states saved in a checkpoint."""
    if "rng.torch" in rng_state:
        torch.set_rng_state(rng_state["rng.torch"])
    cuda = sorted(k for k in rng_state if k.startswith("rng.cuda."))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([rng_state[k] for k in cuda])
