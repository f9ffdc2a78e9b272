"""Logits from any model hierlens works with, for evaluation and for training.

:func:`model_logits` is the one evaluation forward: TransformerBridges, and plain modules
returning logits or an object with ``.logits``.

:func:`training_forward` is the training loop's forward. A ``TransformerBridge`` routes
every sub-module through its hook components, which costs time on every training step even
when no hook is attached (on 2 CPU cores about a third of a small model's step). For
training we run an unwrapped copy of the same TL-native architecture with
``torch.func.functional_call`` on the bridge's own parameters: gradients land on the
bridge's parameters, the optimizer updates them in place, and the bridge stays the one model
object users see. Models that are not native bridges use :func:`model_logits`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch.func import functional_call

__all__ = ["Forward", "is_bidirectional", "model_logits", "training_forward"]


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


Forward = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]

_WRAPPED = "._original_component"


def training_forward(model: torch.nn.Module) -> Forward:
    """A function ``(tokens, attention_mask) -> logits`` computing ``model``'s logits.

    For a bridge around a TL-native model this is the hook-free fast path described in the
    module docstring; otherwise it is :func:`model_logits`.
    """
    native = _native_mirror(model)
    if native is None:
        return lambda tokens, mask: model_logits(model, tokens, mask)
    plain, params = native
    bidirectional = is_bidirectional(model)

    def forward(tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        kwargs = {"attention_mask": mask.long()} if (bidirectional and mask is not None) else {}
        return functional_call(plain, params, (tokens,), kwargs)

    return forward


def _native_mirror(
    model: torch.nn.Module,
) -> tuple[torch.nn.Module, dict[str, torch.Tensor]] | None:
    original = getattr(model, "original_model", None)
    try:
        from transformer_lens.model_bridge.sources.native.model import NativeModel
    except ImportError:  # pragma: no cover
        return None
    if not isinstance(original, NativeModel):
        return None
    params = {name.replace(_WRAPPED, ""): p for name, p in original.named_parameters()}
    device = next(iter(params.values())).device
    with torch.random.fork_rng(devices=[]):
        plain = NativeModel(copy.deepcopy(original.cfg)).to(device)
    if set(dict(plain.named_parameters())) != set(params):
        return None  # layout differs from what we mirror: use the bridge
    plain.requires_grad_(False)
    return plain, params
