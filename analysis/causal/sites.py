"""Editing activations at hook points, and the one forward every causal method runs.

An *edit* is a function ``activation -> activation`` applied where a hook point fires:
a TransformerLens hook point on a bridge (``blocks.1.hook_resid_post``,
``blocks.0.attn.hook_z``, ...) or, on a plain ``nn.Module``, the output of a named submodule
(the recurrent, stack and tape architectures' ``hook_hidden``, ``hook_stack``, ...). Every
activation must be laid out ``(batch, pos, ...)``; a trailing ``(heads, d_head)`` pair (or
any trailing axes) is kept.

:func:`forward_logits` runs a batch with explicit inputs: right-padded ``tokens``, an
``attention_mask`` that is 1 at real tokens and, for bridges over Hugging Face models,
``position_ids`` ``0 .. length - 1`` (never left to a library's defaults).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch

from hierlens.models.forward import model_logits
from hierlens.models.hooks import is_hooked_model, resolve_hook_names, unknown_hook_error

__all__ = [
    "Edit",
    "capture_sites",
    "check_hooks",
    "check_layout",
    "editing_hooks",
    "forward_logits",
]

#: ``activation -> activation`` (same shape)
Edit = Callable[[torch.Tensor], torch.Tensor]


def check_hooks(model: torch.nn.Module, hooks: str | Sequence[str]) -> list[str]:
    """Resolve hook names or glob patterns on ``model`` (``ValueError`` naming the closest
    valid names for an unknown one)."""
    return resolve_hook_names(model, hooks)


@contextmanager
def editing_hooks(model: torch.nn.Module, edits: Mapping[str, Edit]) -> Iterator[None]:
    """Within the context, replace the activation at each hook ``name`` by
    ``edits[name](activation)``. Hooks are removed on exit, also after an error."""
    if not edits:
        yield
        return
    if is_hooked_model(model):

        def wrap(fn: Edit) -> Callable[..., torch.Tensor]:
            def hook(tensor: torch.Tensor, *, hook) -> torch.Tensor:  # noqa: ARG001
                return fn(tensor)

            return hook

        for name in edits:
            if name not in model.hook_dict:
                raise unknown_hook_error(name, list(model.hook_dict), model)
        with model.hooks(fwd_hooks=[(name, wrap(fn)) for name, fn in edits.items()]):
            yield
        return
    modules = dict(model.named_modules())
    handles = []

    def wrap_module(name: str, fn: Edit) -> Callable[..., object]:
        def hook(module, inputs, output):  # noqa: ARG001
            if isinstance(output, tuple):
                return (fn(output[0]), *output[1:])
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"module {name!r} returned {type(output).__name__}, not a tensor")
            return fn(output)

        return hook

    try:
        for name, fn in edits.items():
            if not name or name not in modules:
                raise unknown_hook_error(name, [n for n in modules if n], model)
            handles.append(modules[name].register_forward_hook(wrap_module(name, fn)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def forward_logits(
    model: torch.nn.Module, tokens: torch.Tensor, lengths: torch.Tensor
) -> torch.Tensor:
    """Logits ``(B, T, d_vocab)`` of right-padded ``tokens`` ``(B, T)`` with ``lengths``
    ``(B,)`` real tokens each: :func:`~hierlens.models.forward.model_logits` with the key
    mask of ``lengths`` (a Hugging Face bridge gets the explicit ``(B, 1, T, T)`` mask and
    positions, a bidirectional model the ``(B, T)`` key mask, a causal one the tokens alone)."""
    T = tokens.shape[1]
    mask = torch.arange(T, device=tokens.device)[None, :] < lengths.to(tokens.device)[:, None]
    return model_logits(model, tokens, mask)


def capture_sites(
    model: torch.nn.Module, tokens: torch.Tensor, lengths: torch.Tensor, hooks: Sequence[str]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logits and the activations ``{hook: (B, T, ...)}`` of one forward (no gradients)."""
    seen: dict[str, torch.Tensor] = {}

    def keep(name: str) -> Edit:
        def fn(x: torch.Tensor) -> torch.Tensor:
            check_layout(name, x, tokens)
            seen[name] = x.detach().clone()
            return x

        return fn

    with torch.no_grad(), editing_hooks(model, {h: keep(h) for h in hooks}):
        logits = forward_logits(model, tokens, lengths)
    missing = [h for h in hooks if h not in seen]
    if missing:
        raise ValueError(f"hook(s) {missing} did not fire in the forward pass")
    return logits, seen


def check_layout(name: str, x: torch.Tensor, tokens: torch.Tensor) -> None:
    """A ``ValueError`` unless the activation at ``name`` is laid out ``(batch, pos, ...)``."""
    if not isinstance(x, torch.Tensor) or x.dim() < 3 or tuple(x.shape[:2]) != tuple(tokens.shape):
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(
            f"hook {name!r} gives an activation of shape {shape}; causal interventions need "
            f"(batch, pos, ...) = {tuple(tokens.shape)} + features (attention patterns and "
            "other per-head maps are not position-indexed)"
        )
