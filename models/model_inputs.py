"""The keyword inputs of a forward pass: attention direction, masks and positions.

A ``transformers`` model turns its ``attention_mask`` and ``position_ids`` arguments into the
attention pattern through heuristics that change between releases. For example, from 5.25
BERT reads jumps in ``position_ids`` as *packed sequences* when no 2-D mask is given and
blocks attention across the jump, and the TransformerLens bridge derives positions from a
2-D mask with holes. hierlens never leaves the pattern to those rules: every forward it
runs through a Hugging Face model gets

- ``attention_mask`` of shape ``(B, 1, T, T)``: an additive float mask (0 where query ``q``
  may attend to key ``k``, the dtype's most negative value elsewhere), which every supported
  release passes to the attention as it is;
- ``position_ids`` ``(B, T)``: the position of each token, stated explicitly.

Plain ``nn.Module`` models and TL-native bridges keep their documented ``(B, T)`` key mask.
"""

from __future__ import annotations

import torch

from hierlens.core.device import model_dtype

__all__ = ["explicit_attention", "forward_kwargs", "hf_model", "is_bidirectional"]


def is_bidirectional(model: torch.nn.Module) -> bool:
    """True for models whose config says their attention is not causal."""
    cfg = getattr(model, "cfg", None)
    return getattr(cfg, "attention_dir", "causal") != "causal"


def hf_model(model: torch.nn.Module) -> torch.nn.Module | None:
    """The ``transformers.PreTrainedModel`` a bridge wraps (``model.original_model``), or
    ``None`` for anything else (TL-native bridges, plain modules)."""
    inner = getattr(model, "original_model", None)
    if inner is None:
        return None
    try:
        from transformers import PreTrainedModel
    except ImportError:  # pragma: no cover - transformers is a core dependency
        return None
    return inner if isinstance(inner, PreTrainedModel) else None


def explicit_attention(
    keys: torch.Tensor,
    *,
    causal: bool,
    positions: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> dict[str, torch.Tensor]:
    """``attention_mask`` ``(B, 1, T, T)`` and ``position_ids`` ``(B, T)`` stating exactly
    which keys each query sees.

    ``keys`` ``(B, T)`` bool: True where the token may be attended to. Query ``q`` attends to
    key ``k`` when ``keys[b, k]`` holds and, with ``causal``, ``positions[b, k] <=
    positions[b, q]`` (the order of the original sequence, so packed rows whose tokens are a
    subsequence keep their causal order; a causal query also always sees itself, so no row of
    the pattern is empty). ``positions`` default to ``0..T-1``. Without ``causal`` the mask is
    a broadcast view of one ``(B, 1, 1, T)`` row per sequence (no ``T x T`` memory).
    """
    if keys.dim() != 2 or keys.dtype != torch.bool:
        raise ValueError(f"keys must be a (B, T) bool tensor, got {keys.dtype} {tuple(keys.shape)}")
    batch, seq = keys.shape
    if positions is None:
        positions = torch.arange(seq, device=keys.device).expand(batch, seq)
    if positions.shape != keys.shape:
        raise ValueError(f"positions {tuple(positions.shape)} must match keys {tuple(keys.shape)}")
    allowed = keys[:, None, None, :]  # (B, 1, 1, T)
    if causal:
        order = positions[:, None, None, :] <= positions[:, None, :, None]  # (B, 1, T, T)
        self_seen = torch.eye(seq, dtype=torch.bool, device=keys.device)
        allowed = (allowed & order) | self_seen
    mask = torch.zeros(allowed.shape, dtype=dtype, device=keys.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return {"attention_mask": mask.expand(batch, 1, seq, seq), "position_ids": positions.long()}


def forward_kwargs(
    model: torch.nn.Module, attention_mask: torch.Tensor | None, tokens: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Keyword arguments for ``model(tokens, **kwargs)`` on right-padded ``tokens`` ``(B, T)``
    with ``attention_mask`` ``(B, T)`` (True or 1 at real tokens; ``None``: all real).

    A bridge over a Hugging Face model gets :func:`explicit_attention` (causal or not as its
    config says); any other model gets ``attention_mask`` as a ``(B, T)`` int64 key mask when
    one is given, and nothing otherwise.
    """
    if hf_model(model) is None:
        return {} if attention_mask is None else {"attention_mask": attention_mask.long()}
    keys = (
        torch.ones(tokens.shape, dtype=torch.bool, device=tokens.device)
        if attention_mask is None
        else attention_mask.to(device=tokens.device, dtype=torch.bool)
    )
    dtype = model_dtype(model)
    return explicit_attention(keys, causal=not is_bidirectional(model), dtype=dtype)
