"""One way to get logits from any model hierlens works with."""

from __future__ import annotations

import torch


def is_bidirectional(model: torch.nn.Module) -> bool:
    """True for models whose config says their attention is not causal."""
    cfg = getattr(model, "cfg", None)
    return getattr(cfg, "attention_dir", "causal") != "causal"


def model_logits(
    model: torch.nn.Module, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Logits ``(B, T, d_vocab)`` of ``model`` on right-padded ``tokens`` ``(B, T)``.

    For a causal model right padding cannot affect real positions, so the mask is not passed
    (saving the mask arithmetic); a bidirectional model gets ``attention_mask`` (True or 1 at
    real tokens). Works for TransformerBridges and for plain modules returning logits or an
    object with ``.logits``.
    """
    if attention_mask is not None and is_bidirectional(model):
        out = model(tokens, attention_mask=attention_mask.long())
    else:
        out = model(tokens)
    if hasattr(out, "logits"):
        out = out.logits
    if not isinstance(out, torch.Tensor) or out.dim() != 3:
        raise TypeError("model must return logits of shape (batch, seq, d_vocab)")
    return out
