"""What the stacked SAE computation takes and returns: run-time switches and outputs."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from .workspace import Workspace


@dataclasses.dataclass
class StepContext:
    """Run-time switches of one stacked forward pass (not hyperparameters).

    Attributes:
        training: training behaviour (BatchTopK selects over the batch, MP-SAE runs exactly
            ``k`` steps) rather than inference behaviour.
        update_buffers: update running buffers (BatchTopK's inference threshold).
        dead_mask: ``(S, d_sae)`` bool, latents counted dead by the trainer (for AuxK), or None.
        sparse_decode: decode TopK codes by gathering only the ``k`` active decoder rows.
        workspace: scratch tensors kept across steps by a training loop that owns the
            parameters (:class:`~hierlens.sae.workspace.Workspace`); a TopK step on the sparse
            CPU kernels then writes the weight gradients into ``.grad`` itself.
    """

    training: bool = True
    update_buffers: bool = False
    dead_mask: torch.Tensor | None = None
    sparse_decode: bool = False
    workspace: Workspace | None = None


@dataclasses.dataclass
class StackedOutput:
    """Result of :meth:`SAE.stacked_forward` for ``S`` stacked SAEs on a batch of ``B`` rows.

    Attributes:
        recon: ``(S, B, d_in)`` reconstructions.
        codes: ``(S, B, d_sae)`` codes, or ``None`` when only ``sparse_codes`` were formed
            (use :meth:`dense_codes` to get them either way).
        loss: ``(S,)`` training loss of each member (the sum of its terms).
        terms: named ``(S,)`` loss terms (``mse`` always: squared error summed over
            ``d_in``, averaged over the batch).
        fires: ``(S, d_sae)`` float, on how many rows each latent fired, when the
            architecture can count it cheaply (else the trainer counts non-zero codes).
        sparse_codes: ``(values, indices)`` ``(S, B, k)`` of a k-sparse code, when formed.
    """

    recon: torch.Tensor
    codes: torch.Tensor | None
    loss: torch.Tensor
    terms: dict[str, torch.Tensor]
    fires: torch.Tensor | None = None
    sparse_codes: tuple[torch.Tensor, torch.Tensor] | None = None

    def dense_codes(self, d_sae: int) -> torch.Tensor:
        """The ``(S, B, d_sae)`` codes (built from ``sparse_codes`` if need be)."""
        if self.codes is not None:
            return self.codes
        values, indices = self.sparse_codes
        zeros = values.new_zeros(*values.shape[:-1], d_sae)
        return zeros.scatter(-1, indices, values)


@dataclasses.dataclass
class SAEOutput:
    """Result of :meth:`SAE.forward`: ``recon`` ``(..., d_in)``, ``codes`` ``(..., d_sae)``,
    the scalar training ``loss`` and its named scalar ``terms``."""

    recon: torch.Tensor
    codes: torch.Tensor
    loss: torch.Tensor
    terms: dict[str, torch.Tensor]


@dataclasses.dataclass
class Encoded:
    """What :meth:`SAE.train_encode` returns for ``S`` stacked SAEs on ``B`` rows.

    Attributes:
        codes: ``(S, B, d_sae)`` codes, or ``None`` when only ``sparse`` was formed.
        sparse: ``(values, indices)`` ``(S, B, k)`` of a k-sparse code, when formed (the
            template then counts firing latents from it and may decode through it).
        pre: ``(S, B, d_sae)`` encoder pre-activations, when a penalty needs them.
        recon: ``(S, B, d_in)`` reconstruction, when the encoder forms it itself (else the
            template decodes the codes).
        extras: whatever else an architecture's penalties reuse from its encoder.
    """

    codes: torch.Tensor | None
    sparse: tuple[torch.Tensor, torch.Tensor] | None = None
    pre: torch.Tensor | None = None
    recon: torch.Tensor | None = None
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)
