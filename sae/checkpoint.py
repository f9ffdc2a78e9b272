"""Checkpoints of the fused SAE trainer, for exact resume.

A checkpoint folder holds ``latest.json`` (the newest complete step folder), ``metrics.jsonl``
and ``step_<step>/`` with ``trainer_state.safetensors`` (stacked SAE tensors, Adam moments and
step counts, dead-latent trackers, metric accumulators), ``trainer_state.json`` (step, the
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


def save_trainer_checkpoint(ckpt, step, groups, saes, opt, fingerprint, window_steps, sst) -> None:
    """Write the trainer state after ``step`` to ``ckpt/step_<step>/``: stacked tensors, Adam
    state, dead-latent trackers and metric accumulators (``trainer_state.safetensors`` and
    ``trainer_state.json``) plus every SAE in SAELens layout (``sae_<i>/``); then point
    ``ckpt/latest.json`` at it (atomically) and delete older step folders."""
    step_dir = ckpt / f"step_{step:08d}"
    tensors: dict[str, torch.Tensor] = {"sst": sst.detach().reshape(1)}
    for gi, g in enumerate(groups):
        for name, t in g.tensors.items():
            tensors[f"g{gi}.t.{name}"] = t.detach()
        tensors[f"g{gi}.since_fired"] = g.since_fired
        for name, t in g.acc.items():
            tensors[f"g{gi}.acc.{name}"] = t
    index = {id(p): i for i, p in enumerate(p for pg in opt.param_groups for p in pg["params"])}
    transposed = _transposed_leaves(groups)
    for p, state in opt.state.items():
        for key, value in state.items():
            value = torch.as_tensor(value)
            if id(p) in transposed and value.shape == p.shape:  # saved in the SAEs' layout
                value = value.transpose(1, 2)
            tensors[f"opt.{index[id(p)]}.{key}"] = value.reshape(-1)
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


def load_trainer_checkpoint(ckpt, groups, opt, fingerprint, sst):
    """Restore the state written by :func:`save_trainer_checkpoint` into ``groups``, ``opt`` and
    ``sst`` (in place); returns ``(step, metric records up to step, window_steps)``, or
    ``(0, [], 0)`` when ``ckpt`` holds no checkpoint. A checkpoint of a different run
    (``fingerprint`` differs) is a ``ValueError``."""
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
    params = [p for pg in opt.param_groups for p in pg["params"]]
    transposed = _transposed_leaves(groups)
    state = opt.state_dict()
    new_state = {}
    for i, p in enumerate(params):
        keys = [k.split(".", 2)[2] for k in t if k.startswith(f"opt.{i}.")]
        if keys:
            new_state[i] = {
                k: (
                    t[f"opt.{i}.{k}"].reshape(())
                    if k == "step"
                    else _param_shaped(t[f"opt.{i}.{k}"], p, id(p) in transposed)
                )
                for k in keys
            }
    state["state"] = new_state
    opt.load_state_dict(state)
    records = [r for r in read_jsonl(ckpt / "metrics.jsonl") if r["step"] <= meta["step"]]
    text = "".join(json.dumps(r) + "\n" for r in records)
    atomic_write_bytes(ckpt / "metrics.jsonl", text.encode())
    return meta["step"], records, meta["window_steps"]


def _transposed_leaves(groups) -> set[int]:
    """``id``s of the trained tensors stored transposed from the SAEs' layout (a checkpoint
    keeps their optimiser state in the SAEs' layout, so it resumes whatever the storage)."""
    return {id(g.leaves[n]) for g in groups for n in g.transposed}


def _param_shaped(flat: torch.Tensor, p: torch.Tensor, transposed: bool) -> torch.Tensor:
    if not transposed:
        return flat.view_as(p)
    return flat.view(p.shape[0], p.shape[2], p.shape[1]).transpose(1, 2).contiguous()
