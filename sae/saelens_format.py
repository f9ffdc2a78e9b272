"""The SAELens 6 file layout of an SAE: a folder with ``cfg.json`` and
``sae_weights.safetensors``.

What SAELens 6 needs to load a folder (``SAE.load_from_disk``):

- ``sae_lens_version`` (top level or in ``metadata``) at least ``6.0.0``; without it the file
  is read as a pre-6.0 one, whose conversion assumes a string ``hook_name``.
- ``architecture`` one of its inference architectures (``standard``, ``topk``, ``jumprelu``,
  ...); a BatchTopK SAE is stored for inference as ``jumprelu`` with its shared threshold,
  as SAELens does itself.
- its config fields at the top level (``d_in``, ``d_sae``, ``dtype``, ``device``,
  ``apply_b_dec_to_input``, ``normalize_activations``, ``reshape_activations``, ``k`` for
  ``topk``); other keys are ignored.
- ``metadata``: where the model-side facts live (``hook_name``, ``hook_head_index``,
  ``sae_lens_version``); each may be null.

We write exactly that, plus the top-level ``hook_name``/``hook_layer`` that SAELens 5 read,
the training hyperparameters under SAELens' names (see each architecture's
``saelens_fields``) and a ``hierlens`` block with the exact config, so our own files
round-trip exactly. MP-SAE files (``matching_pursuit``) use the same layout, but SAELens has
no such architecture.

Beside the two files, ``hierlens_sha256.json`` (:data:`hierlens.core.checksums.CHECKSUMS`)
records their sha256, written with them (:func:`~hierlens.core.checksums.write_checked`:
a save interrupted anywhere leaves files that match it or files a rerun writes again);
:func:`hierlens.sae.load_sae` checks it. SAELens ignores the extra file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from hierlens.core.atomic_io import dumps, tensor_bytes
from hierlens.core.checksums import write_checked

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
# The SAELens file-format version our files follow (SAELens reads the layout by this number).
SAELENS_FORMAT_VERSION = "6.0.0"


def hook_layer(hook_name: str | None) -> int | None:
    """The block index of a ``blocks.<i>.…`` hook name, else None."""
    m = re.match(r"blocks\.(\d+)\.", hook_name or "")
    return int(m.group(1)) if m else None


def sae_cfg_dict(sae: Any) -> dict[str, Any]:
    """The ``cfg.json`` contents for a hierlens SAE (SAELens 6 fields plus ``hierlens``)."""
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
        "hook_layer": hook_layer(c.hook_name),
        "hook_head_index": None,
        "sae_lens_version": SAELENS_FORMAT_VERSION,
        "metadata": {
            "hook_name": c.hook_name,
            "hook_head_index": None,
            "sae_lens_version": SAELENS_FORMAT_VERSION,
            "sae_lens_training_version": None,
        },
    }
    for ours, theirs in sae.saelens_fields.items():
        out[theirs] = getattr(c, ours)
    if "k" in sae.saelens_fields:
        out["activation_fn_kwargs"] = {"k": c.k}
    out["hierlens"] = {"class": type(sae).__name__, "config": c.to_dict()}
    return out


def write_sae_files(sae: Any, path: str | os.PathLike) -> None:
    """Write ``sae`` to the folder ``path`` (created if needed).

    Both files are written atomically together with their checksums
    (:func:`~hierlens.core.checksums.write_checked`): the new checksums are recorded as
    pending first and committed after both files are in place, so a folder whose manifest
    commits them holds exactly what was saved, and an interrupted save is never read as a
    complete, unchecked one.
    """
    path = Path(path)
    tensors = {
        "W_enc": sae.W_enc.detach().contiguous(),
        "b_enc": sae.b_enc.detach(),
        "W_dec": sae.W_dec.detach(),
        "b_dec": sae.b_dec.detach(),
    }
    if "threshold" in sae.tensor_names:
        tensors["threshold"] = sae.threshold.detach()
    write_checked(
        {
            path / WEIGHTS_FILE: tensor_bytes(tensors, metadata={"format": "pt"}),
            path / CFG_FILE: (dumps(sae_cfg_dict(sae), indent=2) + "\n").encode(),
        }
    )
