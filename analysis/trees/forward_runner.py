"""Isolated runs through a model's own forward: any TransformerBridge, or a plain nn.Module.

Tree projections [Murty2023a] run every span of a sentence *isolated*: the model
sees only the span's tokens and the tokens that belong to no word (``[CLS]``, ``[SEP]``,
``<bos>``), each at its original position. Models that :class:`BlockRunner` cannot run
block by block -- bridges booted from a Hugging Face folder with
``TransformerBridge.boot_transformers`` (BERT-style encoders, GPT-2-style causal LMs), or a
user's own module -- go through their own forward pass instead:

- the residual stream is read with a forward hook on ``blocks.{layer}.hook_resid_post``
  (bridges) or on a named submodule (plain modules); the hook ends the pass there, so the
  blocks after it never run;
- a bridge over a Hugging Face model gets every isolated row packed to the tokens it may see
  and an explicit ``(B, 1, T, T)`` attention mask with the tokens' original positions as
  ``position_ids`` (:func:`hierlens.models.model_inputs.explicit_attention`), so no
  ``transformers`` release can reinterpret the positions' jumps (5.25 reads them as packed
  sequences when no mask is given);
- any other forward that takes ``position_ids`` (TL-native bridges, a user's module) gets the
  packed rows with their original positions and, where a row is padded, a ``(B, T)`` key mask
  (1 = visible);
- otherwise each row keeps the whole sentence and the hidden tokens are hidden from every
  query by the ``attention_mask`` alone (positions are then the default ``0..T-1``). In a
  causal model a hidden query that precedes every visible key then has nothing to attend to;
  the model must give it a finite output (as Hugging Face models do), since its value is
  multiplied by a zero weight at later layers.

Either way an isolated span keeps the absolute positions it has in the sentence (positions do
not restart at the span), the convention of the one-forward-per-span reference for
TL-native models.
"""

from __future__ import annotations

import difflib
import inspect

import torch

from hierlens.core.device import model_device, model_dtype
from hierlens.models.model_inputs import explicit_attention, hf_model

from .isolation import isolated_run

__all__ = ["ForwardRows", "infer_causal", "model_limits"]


class _Reached(Exception):
    """Raised by the read-out hook to end a forward pass once the layer is read."""


def _is_bridge(model: torch.nn.Module) -> bool:
    return hasattr(model, "hook_dict") and hasattr(getattr(model, "cfg", None), "n_layers")


def _hf_config(model: torch.nn.Module):
    base = getattr(model, "original_model", model)
    return getattr(base, "config", None)


def infer_causal(model: torch.nn.Module, causal: bool | None) -> bool:
    """Whether ``model``'s attention is causal: ``causal`` when given (a ``ValueError`` if the
    bridge config says otherwise), else the bridge config's
    ``attention_dir``, else a Hugging Face config (``is_decoder``, a ``...ForCausalLM`` /
    ``...LMHeadModel`` architecture, or a bidirectional encoder family)."""
    attention_dir = getattr(getattr(model, "cfg", None), "attention_dir", None)
    if causal is not None:
        if not isinstance(causal, bool):
            raise TypeError(f"causal must be True, False or None, got {causal!r}")
        if attention_dir in ("causal", "bidirectional") and causal != (attention_dir == "causal"):
            raise ValueError(f"causal={causal} but the model's config says {attention_dir=}")
        return causal
    if attention_dir in ("causal", "bidirectional"):
        return attention_dir == "causal"
    config = _hf_config(model)
    if config is not None:
        if getattr(config, "is_decoder", False):
            return True
        names = list(getattr(config, "architectures", None) or []) + [type(model).__name__]
        if any(n.endswith(("ForCausalLM", "LMHeadModel")) for n in names):
            return True
        encoders = ("bert", "roberta", "distilbert", "albert", "electra", "deberta", "xlm")
        if str(getattr(config, "model_type", "")).startswith(encoders):
            return False
    raise ValueError(
        f"cannot tell whether {type(model).__name__} is causal or bidirectional: pass "
        "causal=True (each token attends to earlier tokens only) or causal=False"
    )


def model_limits(model: torch.nn.Module) -> tuple[int | None, int | None]:
    """``(n_ctx, d_vocab)`` from the model's config, ``None`` where it does not say."""
    cfg = getattr(model, "cfg", None)
    n_ctx, d_vocab = getattr(cfg, "n_ctx", None), getattr(cfg, "d_vocab", None)
    config = _hf_config(model)
    if config is not None:
        n_ctx = n_ctx or getattr(config, "max_position_embeddings", None)
        n_ctx = n_ctx or getattr(config, "n_positions", None)
        d_vocab = d_vocab or getattr(config, "vocab_size", None)
    return (int(n_ctx) if n_ctx else None), (int(d_vocab) if d_vocab else None)


def _accepts(fn, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params


def _read_out(model: torch.nn.Module, layer: int | str) -> tuple[str, torch.nn.Module]:
    """The hook name and module whose output is read."""
    if _is_bridge(model):
        n_layers = int(model.cfg.n_layers)
        if isinstance(layer, bool) or not isinstance(layer, (int, str)):
            raise TypeError(f"layer must be an int or a hook name, got {layer!r}")
        if isinstance(layer, int):
            if not -n_layers <= layer < n_layers:
                raise ValueError(
                    f"layer={layer} is out of range for a model with {n_layers} layers: "
                    f"expected {-n_layers} <= layer < {n_layers}"
                )
            layer = f"blocks.{layer % n_layers}.hook_resid_post"
        names = model.hook_dict
    else:
        if not isinstance(layer, str):
            raise TypeError(
                f"{type(model).__name__} is not a TransformerBridge: layer must be the name of "
                "the submodule whose output is the residual stream to compare "
                f"(one of model.named_modules()), got {layer!r}"
            )
        names = dict(model.named_modules())
    if layer not in names:
        close = difflib.get_close_matches(layer, list(names), n=5, cutoff=0.5)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise ValueError(f"layer {layer!r} names no hook point or submodule of the model{hint}")
    return layer, names[layer]


class ForwardRows:
    """Full-context and isolated runs of a group of sentences through ``model``'s forward.

    ``model(tokens, attention_mask=..., position_ids=...)`` is called with ``tokens``
    ``(B, T)`` int64, ``attention_mask`` ``(B, T)`` int64 (1 = visible key, 0 = hidden; only
    when some key is hidden) and ``position_ids`` ``(B, T)`` (only when the forward takes
    them). ``layer``: an int (a bridge's ``blocks.{layer}.hook_resid_post``), a bridge hook
    name, or, for a plain module, the name of the submodule whose output (a ``(B, T, d)``
    tensor, or a tuple starting with one) is read.

    ``causal``: see :func:`infer_causal`. Raises ``TypeError`` for a model whose forward
    takes no ``attention_mask``, ``ValueError`` when the attention direction is unknown.
    """

    def __init__(self, model: torch.nn.Module, layer: int | str, *, causal: bool | None) -> None:
        self.model = model
        self.name, self.target = _read_out(model, layer)
        self.hf = hf_model(model) is not None
        if _is_bridge(model):
            hf = getattr(model, "original_model", None)
            self.packs = self.hf or (hf is not None and _accepts(hf.forward, "position_ids"))
        else:
            if not _accepts(model.forward, "attention_mask"):
                raise TypeError(
                    f"{type(model).__name__}.forward takes no attention_mask argument, so "
                    "span_scores has no way to hide the tokens outside a span; give it a "
                    "forward(input_ids, attention_mask=None[, position_ids=None]) with a "
                    "(batch, seq) key mask, 1 = visible"
                )
            self.packs = _accepts(model.forward, "position_ids")
        self.causal = infer_causal(model, causal)
        self.device, self.dtype = model_device(model), model_dtype(model)
        self._tokens: torch.Tensor | None = None
        self._is_pad: torch.Tensor | None = None

    def forward(
        self,
        tokens: torch.Tensor,
        keys: torch.Tensor | None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The read-out layer's output ``(B, T, d)`` on ``tokens`` ``(B, T)``, with the keys
        where ``keys`` ``(B, T)`` is False hidden from every query."""
        seen: list[torch.Tensor] = []

        def read(module, args, output):
            seen.append(output[0] if isinstance(output, tuple) else output)
            raise _Reached

        kwargs = {}
        if self.hf:
            visible = torch.ones_like(tokens, dtype=torch.bool) if keys is None else keys.bool()
            kwargs = explicit_attention(
                visible, causal=self.causal, positions=positions, dtype=self.dtype
            )
        else:
            if keys is not None and not bool(keys.all()):
                kwargs["attention_mask"] = keys.long()
            if positions is not None and self.packs:
                kwargs["position_ids"] = positions
        handle = self.target.register_forward_hook(read)
        try:
            self.model(tokens, **kwargs)
        except _Reached:
            pass
        finally:
            handle.remove()
        if not seen:
            raise RuntimeError(f"the forward pass of the model never reached {self.name!r}")
        out = seen[0]
        if not isinstance(out, torch.Tensor) or out.shape[:2] != tokens.shape or out.dim() != 3:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"{self.name!r} must output a (batch, seq, d) residual stream for "
                f"(batch, seq) = {tuple(tokens.shape)}, got {shape}"
            )
        return out

    def full(self, tokens: torch.Tensor, is_pad: torch.Tensor) -> torch.Tensor:
        """Full-context outputs ``(S, T, d)`` of right-padded ``tokens`` ``(S, T)``."""
        self._tokens, self._is_pad = tokens, is_pad
        keys = None if self.causal else ~is_pad  # right pads never reach a causal query
        return self.forward(tokens, keys)

    def isolated(
        self, src: torch.Tensor, keep: torch.Tensor, pool_weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Rows of the sentences ``src`` ``(R,)`` (of the last :meth:`full` call) that see only
        the tokens where ``keep`` ``(R, T)`` holds: outputs ``(R, T, d)`` at the original
        positions (zeros at hidden ones), or with ``pool_weight`` ``(R, T)`` their weighted
        sums over the tokens ``(R, d)`` in float64."""
        assert self._tokens is not None, "full() runs first"
        tokens = self._tokens[src]
        if not self.packs:
            out = self.forward(tokens, keep)
            if pool_weight is not None:
                w = pool_weight.to(torch.float64)[:, None, :]
                return torch.bmm(w, out.to(torch.float64))[:, 0]
            return out * keep[..., None].to(out.dtype)

        def run_packed(part, order, valid):
            packed = tokens[part].gather(1, order)
            keys = valid if self.hf else (None if valid is None or self.causal else valid)
            return self.forward(packed, keys, positions=order)

        return isolated_run(run_packed, keep, pool_weight)
