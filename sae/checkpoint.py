"""Checkpoints of the fused SAE trainer, for exact resume.

A checkpoint folder holds ``latest.json`` (the newest complete step folder), ``metrics.jsonl``
and ``step_<step>/`` with ``trainer_state.safetensors`` (stacked SAE tensors, each stack's
optimizer state as :meth:`hierlens.core.optim.StackedAdamW.state_dict` gives it, in the SAEs'
layout, dead-latent trackers, metric accumulators), ``trainer_state.json`` (step, the
run's fingerprint) and each SAE in SAELens layout (``sae_<i>/``, loadable on its own).
"""

from __future__ import annotations

import json
import shutil

import torch

from hierlens.core.atomic_io import (
    atomic_write_bytes,
    atomic_write_json,
    load_tensors,
    read_json,
    read_jsonl,
    save_tensors,
)


def save_trainer_checkpoint(ckpt, step, groups, saes, fingerprint, window_steps, sst) -> None:
    """Write the trainer state after ``step`` to ``ckpt/step_<step>/``: stacked tensors, each
    stack's optimizer state, dead-latent trackers and metric accumulators
    (``trainer_state.safetensors`` and ``trainer_state.json``) plus every SAE in SAELens
    layout (``sae_<i>/``); then point ``ckpt/latest.json`` at it (atomically) and delete older
    step folders."""
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
    save_tensors(step_dir / "trainer_state.safetensors", tensors)
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
    atomic_write_json(step_dir / "trainer_state.json", meta)
    atomic_write_json(ckpt / "latest.json", {"step": step, "dir": step_dir.name})
    for old in ckpt.glob("step_*"):
        if old.is_dir() and old.name != step_dir.name:
            shutil.rmtree(old, ignore_errors=True)


def load_trainer_checkpoint(ckpt, groups, fingerprint, sst):
    """Restore the state written by :func:`save_trainer_checkpoint` into ``groups`` (their
    tensors, trackers and optimizers) and ``sst`` (in place); returns ``(step, metric records
    up to step, window_steps)``, or ``(0, [], 0)`` when ``ckpt`` holds no checkpoint. A
    checkpoint of a different run (``fingerprint`` differs) is a ``ValueError``."""
    latest = ckpt / "latest.json"
    if not latest.exists():
        return 0, [], 0
    step_dir = ckpt / read_json(latest)["dir"]
    meta = read_json(step_dir / "trainer_state.json")
    if meta["fingerprint"] != fingerprint:
        raise ValueError(
            f"the checkpoint in {ckpt} was written by a different run (SAE configs or trainer "
            "settings differ); use a new checkpoint_dir or resume=False"
        )
    t = load_tensors(step_dir / "trainer_state.safetensors")
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
            for key in state:
                if _tensor_name(key) in g.transposed:  # back to the leaves' layout
                    state[key] = state[key].transpose(1, 2)
            g.optimizer.load_state_dict(state)
    records = [r for r in read_jsonl(ckpt / "metrics.jsonl") if r["step"] <= meta["step"]]
    text = "".join(json.dumps(r) + "\n" for r in records)
    atomic_write_bytes(ckpt / "metrics.jsonl", text.encode())
    return meta["step"], records, meta["window_steps"]


def _tensor_name(key: str) -> str | None:
    """The tensor an optimizer-state key (``exp_avg.<name>``) belongs to (``None`` for the
    step counts)."""
    return key.split(".", 1)[1] if "." in key else None
