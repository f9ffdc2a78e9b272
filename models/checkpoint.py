"""Atomic, checksummed training checkpoints.

A checkpoint is a folder ``checkpoints/step_NNNNNNN/`` of a run directory (named by
:meth:`hierlens.models.Run.checkpoint_dir`) holding

- ``model.safetensors``: the model's ``state_dict`` (TransformerLens parameter names);
- ``state.safetensors``: the optimizer state (``optimizer.<key>``: the model's rows of a
  :meth:`hierlens.core.optim.StackedAdamW.state_dict`, step count and AdamW moments keyed by
  parameter name) and RNG states;
- ``state.json``: the step, the optimizer state's format and member count (no
  hyper-parameters: on resume they come from the run's config), any extra JSON state, and
  the sha256 of both tensor files.

It is written into a temporary folder beside the final one, with the checksum manifest of all
three files (:mod:`~hierlens.core.checksums`), then renamed into place, so a checkpoint
folder either is complete or does not exist. Loading checks every file against the manifest
(a missing manifest is an error, not a pass) and ``state.json`` against its schema (the step
must be the folder's step) and the optimizer state against its layout
(:func:`~hierlens.core.optim.state_dict_problem`): a truncated, modified or malformed file is a
:class:`~hierlens.core.checksums.CorruptFileError` naming it. Everything goes through the
confined file layer, so no file of a checkpoint is reached through a link.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hierlens.core import confined_io as fs
from hierlens.core.atomic_io import dumps, parse_tensors, read_json, tensor_bytes
from hierlens.core.checksums import (
    CHECKSUMS,
    CorruptFileError,
    read_checked,
    sha256_bytes,
    write_checked,
)
from hierlens.core.confined_delete import remove_tree
from hierlens.core.optim import state_dict_problem

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
TENSOR_FILES = ("model.safetensors", "state.safetensors")
_FILES = (*TENSOR_FILES, STATE_FILE, CHECKSUMS)
_STEP_NAME = re.compile(r"^step_(\d+)$")
#: the ``"format"`` of ``state.json``'s ``"optimizer"`` entry: a flat
#: :meth:`~hierlens.core.optim.StackedAdamW.state_dict` in ``state.safetensors``
OPTIMIZER_FORMAT = "StackedAdamW"


def owned_checkpoint_file(parts: tuple[str, ...]) -> bool:
    """Whether ``parts`` (a path inside a checkpoint folder) is a file a checkpoint writes:
    its three files, their manifest, or a temporary file of an interrupted write."""
    return len(parts) == 1 and (
        parts[0] in _FILES or re.fullmatch(r"\..+\.tmp", parts[0]) is not None
    )


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


def _check_optimizer_file(path: Path, meta: Any, state: Mapping[str, torch.Tensor]) -> None:
    """A :class:`CorruptFileError` naming the file of checkpoint ``path`` whose optimizer
    state is malformed: ``state.json``'s ``"optimizer"`` entry ``meta`` or the tensors
    ``state`` (the ``optimizer.`` entries of ``state.safetensors``)."""
    ok = (
        isinstance(meta, dict)
        and meta.get("format") == OPTIMIZER_FORMAT
        and type(meta.get("members")) is int
    )
    if not ok:
        raise CorruptFileError(
            f"{path / STATE_FILE}: malformed optimizer state (expected {{'format': "
            f"{OPTIMIZER_FORMAT!r}, 'members': M}}; a checkpoint of another optimizer layout "
            "does not resume)"
        )
    problem = state_dict_problem(state)
    if problem is None and len(state["step"]) != meta["members"]:
        problem = f"{len(state['step'])} members, {STATE_FILE} says {meta['members']}"
    if problem is not None:
        raise CorruptFileError(
            f"{path / 'state.safetensors'}: malformed optimizer state ({problem})"
        )


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
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    fs.make_dirs(final.parent)
    _remove_owned(tmp)
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {"step": step, "extra": extra or {}}
    if optimizer_state is not None:
        problem = state_dict_problem(optimizer_state)
        if problem is not None:
            raise ValueError(f"optimizer_state is not a StackedAdamW state_dict: {problem}")
        tensors.update({f"optimizer.{k}": v.detach() for k, v in optimizer_state.items()})
        meta["optimizer"] = {"format": OPTIMIZER_FORMAT, "members": len(optimizer_state["step"])}
    if save_rng:
        tensors["rng.torch"] = torch.get_rng_state()
        if torch.cuda.is_available():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"rng.cuda.{i}"] = s
    files = {
        tmp / "model.safetensors": tensor_bytes(dict(model.state_dict())),
        tmp / "state.safetensors": tensor_bytes(tensors),
    }
    meta["sha256"] = {p.name: sha256_bytes(d) for p, d in files.items()}
    files[tmp / STATE_FILE] = (dumps(meta, indent=2) + "\n").encode()
    write_checked(files)
    if fs.file_kind(final) is not None:  # re-saving the same step: move the old one aside first
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        _remove_owned(old)
        fs.replace(final, old)
        fs.replace(tmp, final)
        _remove_owned(old)
    else:
        fs.replace(tmp, final)
    return final


def _remove_owned(folder: Path) -> None:
    """Remove a checkpoint folder of ours (only the files a checkpoint writes)."""
    left = remove_tree(folder, owned_checkpoint_file)
    if left:
        log.warning("%s: left %d file(s) a checkpoint does not write: %s", folder, len(left), left)


def read_checkpoint_meta(path: str | os.PathLike, step: int | None = None) -> dict[str, Any]:
    """The checked and validated ``state.json`` of the checkpoint folder ``path``: it must
    match the manifest, name the folder's step (and ``step`` when given), and hold the
    checksums of both tensor files. Otherwise a :class:`CorruptFileError` naming it."""
    path = Path(path)
    meta_path = path / STATE_FILE
    if fs.file_kind(meta_path) is None:
        raise CorruptFileError(f"{meta_path}: missing (incomplete checkpoint)")
    meta = read_json(meta_path)
    m = _STEP_NAME.match(path.name)
    expected = step if step is not None else (int(m.group(1)) if m else None)
    sums = meta.get("sha256") if isinstance(meta, dict) else None
    ok = (
        isinstance(meta, dict)
        and type(meta.get("step")) is int
        and (expected is None or meta["step"] == expected)
        and isinstance(sums, dict)
        and all(isinstance(sums.get(n), str) for n in TENSOR_FILES)
        and isinstance(meta.get("extra", {}), dict)
        and isinstance(meta.get("optimizer", {}), dict)
    )
    if not ok:
        raise CorruptFileError(
            f"{meta_path}: malformed checkpoint metadata (expected step {expected}, the "
            "checksums of both tensor files, and objects for extra and optimizer)"
        )
    return meta


def load_checkpoint(
    path: str | os.PathLike, *, map_location: str | torch.device = "cpu", step: int | None = None
) -> Checkpoint:
    """Load and verify a checkpoint folder (of ``step`` when given; else the step its folder
    name says).

    Raises :class:`CorruptFileError` naming the bad file (missing, truncated, checksum
    mismatch, malformed metadata), so callers can report it and fall back to an earlier
    checkpoint.
    """
    path = Path(path)
    meta = read_checkpoint_meta(path, step)
    files = {}
    for name in TENSOR_FILES:
        if fs.file_kind(path / name) is None:
            raise CorruptFileError(f"{path / name}: missing")
        data = read_checked(path / name)
        if sha256_bytes(data) != meta["sha256"][name]:
            raise CorruptFileError(f"{path / name}: checksum mismatch with {STATE_FILE}")
        files[name] = parse_tensors(path / name, data)
    state = files["state.safetensors"]
    model_state = {k: v.to(map_location) for k, v in files["model.safetensors"].items()}
    optimizer_state = None
    if "optimizer" in meta:
        n = len("optimizer.")
        optimizer_state = {k[n:]: v for k, v in state.items() if k.startswith("optimizer.")}
        _check_optimizer_file(path, meta["optimizer"], optimizer_state)
    rng = {k: v for k, v in state.items() if k.startswith("rng.")}
    return Checkpoint(meta["step"], path, model_state, optimizer_state, rng, meta.get("extra", {}))


def restore_rng(rng_state: dict[str, torch.Tensor]) -> None:
    """Restore the torch (and CUDA) RNG states saved in a checkpoint."""
    if "rng.torch" in rng_state:
        torch.set_rng_state(rng_state["rng.torch"])
    cuda = sorted(k for k in rng_state if k.startswith("rng.cuda."))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([rng_state[k] for k in cuda])
