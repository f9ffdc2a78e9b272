"""Checkpoints of the fused SAE trainer, for exact resume.

A checkpoint folder holds ``latest.json`` (the newest complete step folder), ``metrics.jsonl``
and ``step_<step>/`` with ``trainer_state.safetensors`` (stacked SAE tensors, each stack's
optimizer state as :meth:`hierlens.core.optim.StackedAdamW.state_dict` gives it, in the SAEs'
layout, dead-latent trackers, metric accumulators), ``trainer_state.json`` (step, the
run's fingerprint) and each SAE in SAELens layout (``sae_<i>/``, loadable on its own).

Every file is written with its checksum (:mod:`hierlens.core.checksums`) through the
confined file layer and checked when a run resumes; ``latest.json`` may name only a step
folder of this checkpoint; old step folders are deleted as far as the checkpoint wrote them.
A malformed optimizer state (:func:`hierlens.core.optim.state_dict_problem`) or one that does
not fit the SAEs being trained is a :class:`~hierlens.core.checksums.CorruptFileError` naming
the file.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from hierlens.core import confined_io as fs
from hierlens.core.atomic_io import (
    load_checked_tensors,
    read_json,
    salvage_jsonl,
    tensor_bytes,
    write_checked_json,
    write_checked_jsonl,
)
from hierlens.core.checksums import CorruptFileError, write_checked
from hierlens.core.optim import state_dict_problem
from hierlens.models.run_clean import remove_owned

_STEP_DIR = re.compile(r"step_(\d{8,})")


def save_trainer_checkpoint(ckpt, step, groups, saes, fingerprint, window_steps, sst) -> None:
    """Write the trainer state after ``step`` to ``ckpt/step_<step>/``: stacked tensors, each
    stack's optimizer state, dead-latent trackers and metric accumulators
    (``trainer_state.safetensors`` and ``trainer_state.json``) plus every SAE in SAELens
    layout (``sae_<i>/``); then point ``ckpt/latest.json`` at it (atomically) and delete older
    step folders."""
    ckpt = Path(ckpt)
    step_dir = ckpt / f"step_{step:08d}"
    tensors: dict[str, torch.Tensor] = {"sst": sst.detach().reshape(1)}
    for gi, g in enumerate(groups):
        for name, t in g.tensors.items():
            tensors[f"g{gi}.t.{name}"] = t.detach()
        tensors[f"g{gi}.since_fired"] = g.since_fired
        for name, t in g.acc.items():
            tensors[f"g{gi}.acc.{name}"] = t
        for key, value in g.optimizer.state_dict().items():
            if _tensor_name(key) in g.transposed:  # saved in the SAEs' layout
                value = value.transpose(1, 2)
            tensors[f"g{gi}.optimizer.{key}"] = value.contiguous()
    write_checked({step_dir / "trainer_state.safetensors": tensor_bytes(tensors)})
    for g in groups:
        g.sync_back(saes)
    for i, s in enumerate(saes):
        s.save(step_dir / f"sae_{i:03d}")
    meta = {
        "step": step,
        "window_steps": window_steps,
        "aux_dead": [g.aux_dead for g in groups],
        "acc_keys": [sorted(g.acc) for g in groups],
        "fingerprint": fingerprint,
    }
    write_checked_json(step_dir / "trainer_state.json", meta)
    write_checked_json(ckpt / "latest.json", {"step": step, "dir": step_dir.name})
    old = [ckpt / n for n, k in fs.entries(ckpt).items() if k == "dir" and _STEP_DIR.fullmatch(n)]
    remove_owned(ckpt, [d for d in old if d.name != step_dir.name], "the SAE trainer")


def _latest(ckpt: Path) -> tuple[int, Path] | None:
    """``(step, folder)`` that ``latest.json`` names (checked), None without one."""
    latest = ckpt / "latest.json"
    if fs.file_kind(latest) is None:
        return None
    meta = read_json(latest)
    ok = isinstance(meta, dict) and type(meta.get("step")) is int and meta["step"] >= 0
    if not ok or meta.get("dir") != f"step_{meta['step']:08d}":
        raise CorruptFileError(f"{latest}: expected {{'step': S, 'dir': 'step_<S, 8 digits>'}}")
    return meta["step"], ckpt / meta["dir"]


def load_trainer_checkpoint(ckpt, groups, fingerprint, sst):
    """Restore the state written by :func:`save_trainer_checkpoint` into ``groups`` (their
    tensors, trackers and optimizers) and ``sst`` (in place); returns ``(step, metric records
    up to step, window_steps)``, or ``(0, [], 0)`` when ``ckpt`` holds no checkpoint. A
    checkpoint of a different run (``fingerprint`` differs) is a ``ValueError``; a file that
    fails its checksum, is malformed or does not fit the SAEs is a :class:`CorruptFileError`
    naming it."""
    ckpt = Path(ckpt)
    found = _latest(ckpt)
    if found is None:
        return 0, [], 0
    step, step_dir = found
    meta = read_json(step_dir / "trainer_state.json")
    keys = {"step": int, "window_steps": int, "aux_dead": list, "acc_keys": list}
    if not isinstance(meta, dict) or any(type(meta.get(k)) is not t for k, t in keys.items()):
        raise CorruptFileError(f"{step_dir / 'trainer_state.json'}: malformed trainer state")
    if meta.get("fingerprint") != fingerprint:
        raise ValueError(
            f"the checkpoint in {ckpt} was written by a different run (SAE configs or trainer "
            "settings differ); use a new checkpoint_dir or resume=False"
        )
    if meta["step"] != step or len(meta["acc_keys"]) != len(groups):
        raise CorruptFileError(
            f"{step_dir / 'trainer_state.json'}: does not match {ckpt / 'latest.json'} or the "
            "SAEs being trained"
        )
    t = load_checked_tensors(step_dir / "trainer_state.safetensors")
    try:
        _restore(t, meta, groups, sst)
    except (KeyError, RuntimeError, ValueError, IndexError) as exc:
        raise CorruptFileError(
            f"{step_dir / 'trainer_state.safetensors'}: does not fit the SAEs being trained "
            f"({type(exc).__name__}: {exc})"
        ) from None
    records = salvage_jsonl(ckpt / "metrics.jsonl", schema={"step": int, "sae": int})
    records = [r for r in records if r["step"] <= meta["step"]]
    write_checked_jsonl(ckpt / "metrics.jsonl", records)
    return meta["step"], records, meta["window_steps"]


def _restore(t, meta, groups, sst) -> None:
    """Copy the checkpoint's tensors ``t`` into the groups (tensors, trackers, optimizers)
    and ``sst``; a malformed optimizer state is a ``ValueError`` saying what is wrong."""
    dev = sst.device
    with torch.no_grad():
        sst.copy_(t["sst"].reshape(()).to(dev))
        for gi, g in enumerate(groups):
            for name, value in g.tensors.items():
                value.copy_(t[f"g{gi}.t.{name}"].to(dev))
            g.since_fired = t[f"g{gi}.since_fired"].to(dev)
            g.acc = {k: t[f"g{gi}.acc.{k}"].to(dev) for k in meta["acc_keys"][gi]}
            g.aux_dead = meta["aux_dead"][gi]
            prefix = f"g{gi}.optimizer."
            state = {k[len(prefix) :]: v for k, v in t.items() if k.startswith(prefix)}
            problem = state_dict_problem(state)
            if problem is not None:
                raise ValueError(f"malformed optimizer state of stack {gi}: {problem}")
            for key in state:
                if _tensor_name(key) in g.transposed:  # back to the leaves' layout
                    state[key] = state[key].transpose(1, 2)
            g.optimizer.load_state_dict(state)


def _tensor_name(key: str) -> str | None:
    """The tensor an optimizer-state key (``exp_avg.<name>``) belongs to (``None`` for the
    step counts)."""
    return key.split(".", 1)[1] if "." in key else None
