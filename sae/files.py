"""Reading and writing SAE folders in SAELens' layout (``cfg.json`` + ``sae_weights.safetensors``).

:meth:`hierlens.sae.SAE.save` writes the SAELens 6 layout described in :mod:`hierlens.sae.saelens_format`.
:func:`load_sae` reads our files exactly (from their ``hierlens`` block) and files written by
other tools that follow the layout: the ``architecture`` is looked up in the SAE registry
(:func:`hierlens.sae.sae_class`, which knows SAELens' names ``standard``, ``topk``,
``batchtopk``, ``jumprelu`` and ``matching_pursuit``) and each architecture's
``saelens_fields`` say which ``cfg.json`` keys hold its hyperparameters.
"""

from __future__ import annotations

import dataclasses
import errno
import os
from pathlib import Path
from typing import Any

import torch

from hierlens.core import confined_io as fs
from hierlens.core.atomic_io import parse_tensors, read_json
from hierlens.core.checksums import CHECKSUMS, CorruptFileError, is_committed, read_checked
from hierlens.core.config import unknown_keys_error

# The architectures register themselves on SAE when their modules are imported.
from . import batch_topk, jumprelu, matching_pursuit, matryoshka, relu, topk  # noqa: F401
from .base import SAE, sae_class
from .saelens_format import CFG_FILE, WEIGHTS_FILE

__all__ = ["is_saved", "load_sae"]


def is_saved(path: str | os.PathLike) -> bool:
    """Whether the folder ``path`` holds a completely saved SAE: both files present, committed
    in its checksum manifest and matching it (a save that was interrupted is not, and is
    written again by a rerun)."""
    path = Path(path)
    return is_committed(path / CFG_FILE) and is_committed(path / WEIGHTS_FILE)


def _foreign_config(cls: type[SAE], cfg: dict[str, Any], cfg_path: Path) -> dict[str, Any]:
    """Config fields of ``cls`` from a SAELens-style ``cfg.json`` we did not write."""
    meta = cfg.get("metadata") or {}
    norm = cfg.get("normalize_activations", "none")
    if norm not in (None, "none"):
        raise ValueError(
            f"{cfg_path}: normalize_activations={norm!r} is not supported (only 'none'); "
            "rescale the activations before using this SAE"
        )
    defaults = {f.name: f.default for f in dataclasses.fields(cls.config_class)}
    fields: dict[str, Any] = {
        "d_in": cfg["d_in"],
        "d_sae": cfg["d_sae"],
        "hook_name": cfg.get("hook_name") or meta.get("hook_name"),
        "dtype": str(cfg.get("dtype", "float32")).removeprefix("torch."),
        "apply_b_dec_to_input": bool(
            cfg.get("apply_b_dec_to_input", defaults["apply_b_dec_to_input"])
        ),
    }
    for ours, theirs in cls.saelens_fields.items():
        if cfg.get(theirs) is not None:
            fields[ours] = cfg[theirs]
    if "k" in cls.saelens_fields:
        k = cfg.get("k", (cfg.get("activation_fn_kwargs") or {}).get("k"))
        if k is None:
            raise ValueError(f"{cfg_path}: architecture {cfg['architecture']!r} needs 'k'")
        fields["k"] = int(k)
    return fields


def load_sae(
    path: str | os.PathLike,
    device: str | torch.device | None = None,
    dtype: str | None = None,
    verify: bool | None = None,
) -> SAE:
    """Load an SAE from a folder in SAELens' layout (ours or another tool's).

    Args:
        path: folder with ``cfg.json`` and ``sae_weights.safetensors``.
        device: ``None``: CUDA when available, else CPU.
        dtype: override the parameter dtype named in ``cfg.json``.
        verify: both files must match the checksum manifest beside them
            (``hierlens_sha256.json``); None: required for a folder hierlens wrote (its
            ``cfg.json`` has a ``hierlens`` block, or the manifest exists), not for an SAE
            written by another tool. Readers of a run directory pass True; False checks
            the files only against checksums that are recorded.

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: unknown architecture, missing fields or tensors, or tensors of the wrong
            shape (the message names the file).
        CorruptFileError: (a ``ValueError``) a file fails the checksum recorded beside it
            (``hierlens_sha256.json``), has none where one is expected, is truncated or does
            not parse.
    """
    path = Path(path)
    cfg_path, w_path = path / CFG_FILE, path / WEIGHTS_FILE
    for f in (cfg_path, w_path):
        if fs.file_kind(f) != "file":
            raise FileNotFoundError(
                errno.ENOENT, "does not exist (expected an SAE folder in SAELens layout)", str(f)
            )
    has_manifest = fs.file_kind(path / CHECKSUMS) == "file"
    cfg = read_json(cfg_path, verify=has_manifest if verify is None else verify)
    if not isinstance(cfg, dict):
        raise ValueError(f"{cfg_path}: expected a JSON object")
    if verify is None and not has_manifest and "hierlens" in cfg:
        raise CorruptFileError(
            f"{path}: an SAE folder hierlens wrote, without its checksum manifest "
            f"({CHECKSUMS}); its save was interrupted or the manifest removed (save it again)"
        )
    checked = (has_manifest or "hierlens" in cfg) if verify is None else verify
    ours = cfg.get("hierlens")
    if isinstance(ours, dict) and isinstance(ours.get("class"), str):
        cls = sae_class(ours["class"])
        fields = dict(ours["config"])
        for key in ("d_in", "d_sae"):  # what SAELens reads must be what we load
            if key in cfg and cfg[key] != fields.get(key):
                raise ValueError(
                    f"{cfg_path}: {key}={cfg[key]!r} disagrees with the hierlens block "
                    f"({key}={fields.get(key)!r})"
                )
    else:
        arch = cfg.get("architecture", "standard")
        try:
            cls = sae_class(arch)
        except ValueError:
            names = sorted(a for a in SAE._aliases if a.lower() == a)
            raise unknown_keys_error(f"{cfg_path}: SAE architecture", [arch], names) from None
        missing = [k for k in ("d_in", "d_sae") if k not in cfg]
        if missing:
            raise ValueError(f"{cfg_path}: missing field(s) {missing}")
        fields = _foreign_config(cls, cfg, cfg_path)
    if dtype is not None:
        fields["dtype"] = str(dtype).removeprefix("torch.")
    config = cls.config_class.from_dict(fields)
    sae = cls.from_config(config, device)
    weights = parse_tensors(w_path, read_checked(w_path, required=checked))
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
