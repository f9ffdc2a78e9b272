"""Batched building blocks of the stacked SAE computations: every function takes tensors with a
leading member axis ``S`` (``S`` SAEs of one architecture and shape) and works on all members
in one call."""

from __future__ import annotations

import torch


def count_fires(indices: torch.Tensor, values: torch.Tensor, d_sae: int) -> torch.Tensor:
    """``(S, d_sae)`` number of rows in which each latent has a non-zero value, from the
    ``(S, B, k)`` indices/values of a sparse code whose indices are distinct within a row."""
    S = indices.shape[0]
    ones = (values.detach() != 0).to(torch.float32).reshape(S, -1)
    out = torch.zeros(S, d_sae, device=indices.device, dtype=torch.float32)
    return out.scatter_add_(1, indices.reshape(S, -1), ones)


def squared_error(x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """``(S,)`` squared error summed over features, averaged over the batch; ``x`` ``(B, d)``
    or ``(S, B, d)``, ``recon`` ``(S, B, d)``."""
    return (recon.float() - x.float()).pow(2).sum(-1).mean(-1)


def encoder_preacts(x: torch.Tensor, p: dict[str, torch.Tensor], apply_b_dec: bool) -> torch.Tensor:
    """Stacked pre-activations ``(x - b_dec) @ W_enc + b_enc`` ``(S, B, d_sae)`` for a batch
    ``x`` ``(B, d_in)`` shared by all members.

    One batched product with the bias fused in (``baddbmm``, ``x`` broadcast over members,
    the output already in member-major layout); ``b_dec`` enters as the per-member bias
    ``b_enc - b_dec @ W_enc``.
    """
    W = p["W_enc"]
    S = W.shape[0]
    bias = p["b_enc"]
    if apply_b_dec:
        bias = bias - torch.bmm(p["b_dec"].unsqueeze(1).to(W.dtype), W).squeeze(1)
    return torch.baddbmm(bias.unsqueeze(1), x.to(W.dtype).expand(S, *x.shape), W)


def dense_decode(codes: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """``codes @ W_dec + b_dec`` for stacked codes ``(S, B, d_sae)`` -> ``(S, B, d_in)``."""
    return torch.baddbmm(p["b_dec"].unsqueeze(1), codes, p["W_dec"])


def gather_rows(W: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows of stacked matrices ``W`` ``(S, n, d)`` at ``idx`` ``(S, ...)`` -> ``(S, ..., d)``.

    One ``index_select`` on the flattened rows: its backward is a single ``index_add`` into
    the gradient of ``W``, and the index stays ``(S, ...)`` (never expanded to ``d``).
    """
    S, n, d = W.shape
    offset = (torch.arange(S, device=idx.device) * n).view(S, *([1] * (idx.dim() - 1)))
    flat = (idx + offset).reshape(-1)
    return W.reshape(S * n, d).index_select(0, flat).view(*idx.shape, d)


def sparse_decode(
    values: torch.Tensor, indices: torch.Tensor, p: dict[str, torch.Tensor]
) -> torch.Tensor:
    """Decode from the ``k`` active latents only: ``values``/``indices`` ``(S, B, k)``.

    Gathers the ``k`` decoder rows each row uses, so the work is ``B * k * d_in`` instead of
    ``B * d_sae * d_in`` (worth it when ``k << d_sae``; the dense product wins on CPU BLAS).
    """
    rows = gather_rows(p["W_dec"], indices)  # (S, B, k, d_in)
    return p["b_dec"].unsqueeze(1) + torch.einsum("sbk,sbkd->sbd", values.to(rows.dtype), rows)
