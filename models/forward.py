"""Logits from any model hierlens works with, for evaluation and for training.

:func:`model_logits` is the one evaluation forward: TransformerBridges, and plain modules
returning logits or an object with ``.logits``.

:func:`training_forward` is the training loop's forward. A ``TransformerBridge`` routes
every sub-module through its hook components, which costs time on every training step even
when no hook is attached. For training we compute the same function with the fused kernels
of :mod:`.fused` on the bridge's own parameters: gradients land on the bridge's parameters,
the optimizer updates them in place, and the bridge stays the one model object users see.
Models that are not native bridges use :func:`model_logits`.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator

import torch

from .fused import fused_logits, fused_spec, native_params
from .model_inputs import forward_kwargs, hf_model, is_bidirectional

__all__ = ["Forward", "compiled", "evaluating", "model_logits", "training_forward"]


def model_logits(
    model: torch.nn.Module, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Logits ``(B, T, d_vocab)`` of ``model`` on right-padded ``tokens`` ``(B, T)``.

    For a causal model right padding cannot affect real positions, so the mask is not passed
    (saving the mask arithmetic); a bidirectional model gets ``attention_mask`` (True or 1 at
    real tokens). A bridge over a Hugging Face model always gets an explicit attention mask
    and positions (:func:`~hierlens.models.model_inputs.forward_kwargs`). Works for
    TransformerBridges and for plain modules returning logits or an object with ``.logits``.
    """
    if hf_model(model) is not None:
        out = model(tokens, **forward_kwargs(model, attention_mask, tokens))
    elif attention_mask is not None and is_bidirectional(model):
        out = model(tokens, attention_mask=attention_mask.long())
    else:
        out = model(tokens)
    if hasattr(out, "logits"):
        out = out.logits
    if not isinstance(out, torch.Tensor) or out.dim() != 3:
        raise TypeError("model must return logits of shape (batch, seq, d_vocab)")
    return out


@contextlib.contextmanager
def evaluating(model: torch.nn.Module) -> Iterator[None]:
    """Run the block under ``torch.inference_mode()`` with ``model`` in eval mode, and put a
    model that was training back in training mode afterwards (only then: switching modes
    walks every submodule of a bridge)."""
    was_training = model.training
    if was_training:
        model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        if was_training:
            model.train()


Forward = Callable[[torch.Tensor, torch.Tensor | None, torch.Tensor | None], torch.Tensor]


def training_forward(model: torch.nn.Module) -> Forward:
    """A function ``(tokens, attention_mask, keep) -> logits`` computing ``model``'s logits.

    ``tokens`` ``(B, T)``; ``attention_mask`` ``(B, T)`` (True at real tokens) or ``None``;
    ``keep`` ``None`` (logits ``(B, T, d_vocab)``) or the flat indices ``(n,)`` into
    ``B * T`` of the positions whose logits are wanted (logits ``(n, d_vocab)``). For a
    bridge around a TL-native model this is the fused, hook-free path of :mod:`.fused` on
    the bridge's own parameters (computing nothing at the padding when ``keep`` lists the
    real tokens); otherwise it is :func:`model_logits`.
    """
    spec = fused_spec(model)
    if spec is None:

        def plain(tokens: torch.Tensor, mask: torch.Tensor | None, keep=None) -> torch.Tensor:
            logits = model_logits(model, tokens, mask)
            return logits if keep is None else logits.reshape(-1, logits.shape[-1])[keep]

        return plain
    params = native_params(model)

    def forward(tokens: torch.Tensor, mask: torch.Tensor | None, keep=None) -> torch.Tensor:
        return fused_logits(spec, params, tokens, mask, keep)

    return forward


def compiled(forward: Forward, device: torch.device) -> Forward:
    """``torch.compile(forward)`` (``reduce-overhead``, i.e. CUDA graphs, on CUDA), falling
    back to ``forward`` itself, with a warning, if compilation or the first compiled call
    fails (no compiler toolchain, an unsupported platform)."""
    try:
        mode = "reduce-overhead" if device.type == "cuda" else None
        fast = torch.compile(forward, mode=mode, dynamic=device.type != "cuda")
    except Exception as exc:  # noqa: BLE001 - any failure to compile means: run eagerly
        warnings.warn(f"torch.compile unavailable ({exc}); training eagerly", stacklevel=2)
        return forward
    state = {"fn": fast, "tried": False}

    def call(*args):
        if state["tried"]:
            return state["fn"](*args)
        state["tried"] = True
        try:
            return fast(*args)
        except Exception as exc:  # noqa: BLE001
            warnings.warn(f"torch.compile failed ({exc}); training eagerly", stacklevel=2)
            state["fn"] = forward
            return forward(*args)

    return call
