"""SAE files in SAELens' layout: a folder with ``cfg.json`` and ``sae_weights.safetensors``.

``cfg.json`` carries SAELens' field names (``architecture``, ``d_in``, ``d_sae``, ``dtype``,
``device``, ``hook_name`` at the top level and in ``metadata``, ``apply_b_dec_to_input``,
``normalize_activations``, ``k`` and ``activation_fn_kwargs.k`` for TopK-style SAEs,
``l1_coefficient``, ``l0_coefficient``, ``jumprelu_bandwidth``, ``jumprelu_init_threshold``,
``topk_threshold_lr``, ``aux_loss_coefficient``, and the MP-SAE fields
``residual_threshold``, ``max_iterations``, ``stop_on_duplicate_support``) plus a
``hierlens`` block with the exact config, so our own files round-trip exactly.
``sae_weights.safetensors`` holds ``W_enc`` ``(d_in, d_sae)``, ``W_dec`` ``(d_sae, d_in)``,
``b_enc``, ``b_dec`` and ``threshold`` where the architecture has one. Files written by other
tools that follow this layout load too (architectures ``standard``, ``topk``, ``batchtopk``,
``jumprelu``, ``matching_pursuit``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from hierlens.models.atomic_io import atomic_write_json, load_tensors, read_json, save_tensors
from hierlens.models.config import unknown_keys_error

from .base import SAE
from .batch_topk import BatchTopKSAE
from .jumprelu import JumpReLUSAE
from .matching_pursuit import MatchingPursuitSAE
from .relu import ReluSAE
from .topk import TopKSAE

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"

SAE_CLASSES: dict[str, type[SAE]] = {
    c.__name__: c for c in (ReluSAE, TopKSAE, BatchTopKSAE, JumpReLUSAE, MatchingPursuitSAE)
}
ARCHITECTURES: dict[str, type[SAE]] = {
    "standard": ReluSAE,
    "relu": ReluSAE,
    "topk": TopKSAE,
    "batchtopk": BatchTopKSAE,
    "jumprelu": JumpReLUSAE,
    "matching_pursuit": MatchingPursuitSAE,
}


def _hook_layer(hook_name: str | None) -> int | None:
    m = re.match(r"blocks\.(\d+)\.", hook_name or "")
    return int(m.group(1)) if m else None


def sae_cfg_dict(sae: SAE) -> dict[str, Any]:
    """The ``cfg.json`` contents for ``sae`` (SAELens names plus the ``hierlens`` block)."""
    c = sae.cfg
    out: dict[str, Any] = {
        "architecture": sae.architecture,
        "d_in": c.d_in,
        "d_sae": c.d_sae,
        "dtype": c.dtype,
        "device": str(sae.device),
        "apply_b_dec_to_input": c.apply_b_dec_to_input,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "hook_name": c.hook_name,
        "hook_layer": _hook_layer(c.hook_name),
        "hook_head_index": None,
        "metadata": {"hook_name": c.hook_name, "hook_head_index": None},
    }
    if isinstance(sae, TopKSAE):  # includes BatchTopK
        out["k"] = c.k
        out["activation_fn_kwargs"] = {"k": c.k}
        out["aux_loss_coefficient"] = c.aux_coefficient
    if isinstance(sae, BatchTopKSAE):
        out["topk_threshold_lr"] = c.topk_threshold_lr
    if isinstance(sae, ReluSAE):
        out["l1_coefficient"] = c.l1_coefficient
    if isinstance(sae, JumpReLUSAE):
        out["l0_coefficient"] = c.l0_coefficient
        out["jumprelu_bandwidth"] = c.bandwidth
        out["jumprelu_init_threshold"] = c.init_threshold
    if isinstance(sae, MatchingPursuitSAE):
        out["k"] = c.k
        out["residual_threshold"] = c.residual_threshold
        out["max_iterations"] = c.max_iterations
        out["stop_on_duplicate_support"] = c.stop_on_duplicate_support
    out["hierlens"] = {"class": type(sae).__name__, "config": c.to_dict()}
    return out


def save_sae(sae: SAE, path: str | os.PathLike) -> None:
    """Write ``sae`` to the folder ``path`` (created if needed) in SAELens' layout.

    Both files are written atomically (weights first), so an interrupted save never leaves a
    config that points at missing weights of a new shape.
    """
    if not isinstance(sae, SAE):
        raise TypeError(f"save_sae expects a hierlens SAE, got {type(sae).__name__}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {
        "W_enc": sae.W_enc.detach().contiguous(),
        "b_enc": sae.b_enc.detach(),
        "W_dec": sae.W_dec.detach(),
        "b_dec": sae.b_dec.detach(),
    }
    if "threshold" in sae.tensor_names:
        tensors["threshold"] = sae.threshold.detach()
    save_tensors(path / WEIGHTS_FILE, tensors, metadata={"format": "pt"})
    atomic_write_json(path / CFG_FILE, sae_cfg_dict(sae))


def _foreign_config(cls: type[SAE], cfg: dict[str, Any], path: Path) -> dict[str, Any]:
    """Constructor fields of ``cls`` from a SAELens-style ``cfg.json`` we did not write."""
    meta = cfg.get("metadata") or {}
    dtype = str(cfg.get("dtype", "float32")).removeprefix("torch.")
    norm = cfg.get("normalize_activations", "none")
    if norm not in (None, "none"):
        raise ValueError(
            f"{path / CFG_FILE}: normalize_activations={norm!r} is not supported (only 'none'); "
            "rescale the activations before using this SAE"
        )
    fields: dict[str, Any] = {
        "d_in": cfg["d_in"],
        "d_sae": cfg["d_sae"],
        "hook_name": cfg.get("hook_name", meta.get("hook_name")),
        "dtype": dtype,
    }
    if cls is not MatchingPursuitSAE:
        fields["apply_b_dec_to_input"] = bool(cfg.get("apply_b_dec_to_input", True))
    else:
        fields["apply_b_dec_to_input"] = bool(cfg.get("apply_b_dec_to_input", False))
    if cls is ReluSAE:
        fields["unit_norm_decoder"] = False
        if "l1_coefficient" in cfg:
            fields["l1_coefficient"] = float(cfg["l1_coefficient"])
    if issubclass(cls, (TopKSAE, MatchingPursuitSAE)):
        k = cfg.get("k", (cfg.get("activation_fn_kwargs") or {}).get("k"))
        if k is None:
            raise ValueError(f"{path / CFG_FILE}: architecture {cfg['architecture']!r} needs 'k'")
        fields["k"] = int(k)
    if issubclass(cls, TopKSAE) and "aux_loss_coefficient" in cfg:
        fields["aux_coefficient"] = float(cfg["aux_loss_coefficient"])
    if cls is BatchTopKSAE and "topk_threshold_lr" in cfg:
        fields["topk_threshold_lr"] = float(cfg["topk_threshold_lr"])
    if cls is JumpReLUSAE:
        for ours, theirs in (
            ("l0_coefficient", "l0_coefficient"),
            ("bandwidth", "jumprelu_bandwidth"),
            ("init_threshold", "jumprelu_init_threshold"),
        ):
            if cfg.get(theirs) is not None:
                fields[ours] = float(cfg[theirs])
    if cls is MatchingPursuitSAE:
        for name in ("residual_threshold", "max_iterations", "stop_on_duplicate_support"):
            if cfg.get(name) is not None:
                fields[name] = cfg[name]
    return fields


def load_sae(
    path: str | os.PathLike,
    device: str | torch.device | None = None,
    dtype: str | None = None,
) -> SAE:
    """Load an SAE from a folder in SAELens' layout (ours or another tool's).

    Args:
        path: folder with ``cfg.json`` and ``sae_weights.safetensors``.
        device: ``None``: CUDA when available, else CPU.
        dtype: override the parameter dtype named in ``cfg.json``.

    Raises:
        FileNotFoundError: a file is missing. ValueError: unknown architecture, missing
        fields or tensors, or tensors of the wrong shape (the message names the file).
    """
    path = Path(path)
    cfg_path, w_path = path / CFG_FILE, path / WEIGHTS_FILE
    for f in (cfg_path, w_path):
        if not f.is_file():
            raise FileNotFoundError(
                f"{f} does not exist (expected an SAE folder in SAELens layout)"
            )
    cfg = read_json(cfg_path)
    if not isinstance(cfg, dict):
        raise ValueError(f"{cfg_path}: expected a JSON object")
    ours = cfg.get("hierlens")
    if isinstance(ours, dict) and ours.get("class") in SAE_CLASSES:
        cls = SAE_CLASSES[ours["class"]]
        fields = dict(ours["config"])
    else:
        arch = cfg.get("architecture", "standard")
        if arch not in ARCHITECTURES:
            raise unknown_keys_error(f"{cfg_path}: SAE architecture", [arch], sorted(ARCHITECTURES))
        missing = [k for k in ("d_in", "d_sae") if k not in cfg]
        if missing:
            raise ValueError(f"{cfg_path}: missing field(s) {missing}")
        cls = ARCHITECTURES[arch]
        fields = _foreign_config(cls, cfg, path)
    if dtype is not None:
        fields["dtype"] = str(dtype).removeprefix("torch.")
    config = cls.config_class.from_dict(fields)
    sae = cls.from_config(config, device)
    weights = load_tensors(w_path)
    if "threshold" not in weights and "log_threshold" in weights:
        weights["threshold"] = weights["log_threshold"].exp()
    with torch.no_grad():
        for name in sae.tensor_names:
            if name not in weights:
                raise ValueError(f"{w_path}: missing tensor {name!r} (has {sorted(weights)})")
            target = getattr(sae, name)
            value = weights[name]
            if name == "threshold" and value.numel() == 1:
                value = value.reshape(()).expand(target.shape)
            if tuple(value.shape) != tuple(target.shape):
                raise ValueError(
                    f"{w_path}: tensor {name!r} has shape {tuple(value.shape)}, expected "
                    f"{tuple(target.shape)} for d_in={config.d_in}, d_sae={config.d_sae}"
                )
            target.copy_(value.to(target.dtype))
    sae.eval()
    return sae
