"""One fused implementation of a TL-native transformer, for training and for the tree code.

A ``TransformerBridge`` runs every operation of its blocks through a hook point, and the
native blocks compute Q, K and V as three products, attention written out (scores, mask,
softmax, mask again, product) and the parameter-free norms as several ops. This module
computes the same function with fused kernels:

- one product for Q, K and V (``F.linear`` on the concatenated weights);
- ``F.scaled_dot_product_attention`` with ``is_causal`` or a boolean key mask;
- ``F.layer_norm`` / ``F.rms_norm``;
- biases inside the products (``F.linear`` / ``torch.baddbmm``).

It reads the model's own parameters from a mapping ``{native parameter name: tensor}`` (the
names of the TL-native model, e.g. ``layers.0.attn.q.weight``), so gradients land on the
bridge's parameters and the bridge stays the model users see. The same code runs ``S`` models
of one shape at once when every tensor of the mapping carries a leading model axis
(``(S, *shape)``) and the tokens are ``(S, B, T)``: that is how
:func:`~hierlens.models.train_many.train_many` trains a stack of models.

Supported (everything :func:`~hierlens.models.transformer.build_transformer` builds): learned
or rotary positions; LayerNorm, RMSNorm, their parameter-free ``Pre`` variants, or no norm;
MLP activations gelu, gelu_new, relu, silu, solu_ln, or attention-only blocks; causal and
bidirectional attention. :func:`fused_spec` returns ``None`` for anything else (grouped-query
attention, gated MLPs, soft-capping, a non-native model), and callers fall back to the bridge.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F

from .fused_layouts import ATTENTION_GROUPS, Grouped, StackRows, segment_linear

__all__ = [
    "FusedSpec",
    "fused_block",
    "fused_embed",
    "fused_logits",
    "fused_spec",
    "native_model",
    "native_params",
]

Params = Mapping[str, torch.Tensor]

_WRAPPED = "._original_component"

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
    "solu_ln": lambda x: x * F.softmax(x, dim=-1),  # followed by the MLP's LayerNorm
}

# Norm module class name -> (kind, has weight, has bias)
_NORMS = {
    "LayerNorm": ("LN", True, True),
    "NativeLayerNormPre": ("LN", False, False),
    "NativeRMSNorm": ("RMS", True, False),
    "NativeRMSNormPre": ("RMS", False, False),
}


@dataclasses.dataclass(frozen=True)
class _Norm:
    """A norm layer: ``kind`` "LN" or "RMS" (``None``: identity), with or without a scale
    and bias (the ``Pre`` variants have neither and normalise in float32)."""

    kind: str | None
    weight: bool = False
    bias: bool = False
    eps: float = 1e-5


@dataclasses.dataclass(frozen=True)
class FusedSpec:
    """The static shape of a TL-native model that the fused kernels need.

    ``scale``: attention scores are divided by it; ``rotary``: ``(cos, sin)`` tables of shape
    ``(n_ctx, rotary_dim)`` (adjacent-pair format, as the native rotary) or ``None`` for
    learned positions.
    """

    n_layers: int
    n_heads: int
    d_head: int
    scale: float
    causal: bool
    norm: _Norm
    final_norm: _Norm
    act: str | None  # None: attention-only blocks
    mlp_norm: _Norm | None  # the LayerNorm after a SoLU activation ("solu_ln")
    rotary: tuple[torch.Tensor, torch.Tensor] | None = dataclasses.field(compare=False)


def _unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The module a bridge component wraps (or the module itself)."""
    return getattr(module, "_original_component", module)


def native_model(model: torch.nn.Module) -> torch.nn.Module | None:
    """The TL-native model inside a bridge (``tok_embed``, ``layers``, ``ln_out``, ``head``),
    or ``None`` for any other model."""
    base = getattr(model, "original_model", None)
    needed = ("tok_embed", "pos", "layers", "ln_out", "head")
    if base is None or not all(hasattr(base, name) for name in needed):
        return None
    return base


def native_params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``{native parameter name: parameter}`` of a bridge's TL-native model (the bridge's own
    parameter objects, under the names the native model would give them)."""
    base = native_model(model)
    if base is None:
        raise TypeError(f"not a bridge around a TL-native model: {type(model).__name__}")
    return {name.replace(_WRAPPED, ""): p for name, p in base.named_parameters()}


def _norm_of(module: torch.nn.Module) -> _Norm | None:
    m = _unwrap(module)
    if isinstance(m, torch.nn.Identity):
        return _Norm(None)
    entry = _NORMS.get(type(m).__name__)
    if entry is None:
        return None
    kind, weight, bias = entry
    return _Norm(kind, weight, bias, float(m.eps))


def fused_spec(model: torch.nn.Module) -> FusedSpec | None:
    """The :class:`FusedSpec` of a bridge around a TL-native model, or ``None`` when the model
    uses anything the fused kernels do not compute (see the module docstring)."""
    base = native_model(model)
    if base is None or float(getattr(base, "output_logits_soft_cap", 0.0)) > 0:
        return None
    cfg = base.cfg
    if getattr(cfg, "gated_mlp", False):
        return None
    norms, attns = set(), []
    for block in base.layers:
        nb = _unwrap(block)
        attn = _unwrap(nb.attn)
        if (
            type(attn).__name__ != "NativeAttention"
            or attn.kv_repeats != 1
            or attn.attn_scores_soft_cap > 0
        ):
            return None
        attns.append(attn)
        norms.add(_norm_of(nb.ln1))
        if not cfg.attn_only:
            norms.add(_norm_of(nb.ln2))
            mlp = _unwrap(nb.mlp)
            if type(mlp).__name__ != "NativeMLP":
                return None
    final = _norm_of(base.ln_out)
    if None in norms or len(norms) != 1 or final is None:
        return None
    act = None if cfg.attn_only else (cfg.act_fn or "gelu").lower()
    if act is not None and act not in _ACTIVATIONS:
        return None
    mlp_norm = None
    if act == "solu_ln":
        mlp_norm = _norm_of(_unwrap(_unwrap(base.layers[0]).mlp).ln)
    first = attns[0]
    rotary = None
    if first.rotary is not None:
        rot = first.rotary
        rotary = (rot.cos_cached, rot.sin_cached)
    return FusedSpec(
        n_layers=len(attns),
        n_heads=first.n_heads,
        d_head=first.d_head,
        scale=float(first.scale),
        causal=bool(first.causal),
        norm=norms.pop(),
        final_norm=final,
        act=act,
        mlp_norm=mlp_norm,
        rotary=rotary,
    )


# --------------------------------------------------------------------------------------
# Kernels that take one model's tensors or a stack of S models' tensors.


def _per_model(param: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A stacked ``(S, d)`` parameter shaped to broadcast against ``x`` ``(S, ..., d)``."""
    return param.view(param.shape[0], *([1] * (x.dim() - 2)), param.shape[-1])


def _linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    rows: StackRows | None = None,
) -> torch.Tensor:
    """``x @ weight.T + bias``: ``weight`` ``(out, in)`` with ``x`` ``(..., in)``, or stacked
    ``(S, out, in)`` with ``x`` ``(S, ..., in)`` (one batched product for all S) or with the
    ``(M, in)`` flat rows of a stack described by ``rows`` (one product per model's rows)."""
    if weight.dim() == 2:
        return F.linear(x, weight, bias)
    if rows is not None:
        return segment_linear(x, weight, bias, rows.bounds)
    n = weight.shape[0]
    flat = x.reshape(n, -1, x.shape[-1])
    if bias is None:
        out = torch.bmm(flat, weight.transpose(1, 2))
    else:
        out = torch.baddbmm(bias.unsqueeze(1), flat, weight.transpose(1, 2))
    return out.view(*x.shape[:-1], weight.shape[1])


def _normalise(
    norm: _Norm, p: Params, prefix: str, x: torch.Tensor, rows: StackRows | None = None
) -> torch.Tensor:
    if norm.kind is None:
        return x
    weight = p[f"{prefix}.weight"] if norm.weight else None
    bias = p[f"{prefix}.bias"] if norm.bias else None
    shape = x.shape[-1:]
    if weight is None:  # parameter-free: normalised in float32, as the native Pre norms
        x32 = x.float()
        if norm.kind == "LN":
            return F.layer_norm(x32, shape, None, None, norm.eps).to(x.dtype)
        return F.rms_norm(x32, shape, None, norm.eps).to(x.dtype)
    if weight.dim() == 1:  # one model: the fused affine kernels
        if norm.kind == "LN":
            return F.layer_norm(x, shape, weight, bias, norm.eps)
        return weight * F.rms_norm(x.float(), shape, None, norm.eps).to(x.dtype)
    if rows is not None:  # a stack's flat rows: each row's own model's scale and bias
        weight, bias = rows.per_row(weight), None if bias is None else rows.per_row(bias)
    else:
        weight, bias = _per_model(weight, x), None if bias is None else _per_model(bias, x)
    if norm.kind == "LN":
        out = F.layer_norm(x, shape, None, None, norm.eps)
        return torch.addcmul(bias, out, weight)
    return weight * F.rms_norm(x.float(), shape, None, norm.eps).to(x.dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rotary_dim: int) -> torch.Tensor:
    """Rotary embedding in the native adjacent-pair format on ``x`` ``(..., T, d_head)``."""
    rot, rest = x[..., :rotary_dim], x[..., rotary_dim:]
    pairs = rot.unflatten(-1, (-1, 2))
    turned = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    rot = rot * cos + turned * sin
    return torch.cat([rot, rest], dim=-1) if rest.shape[-1] else rot


def fused_embed(
    spec: FusedSpec, p: Params, tokens: torch.Tensor, positions: torch.Tensor | None = None
) -> torch.Tensor:
    """Token (plus learned position) embeddings: ``(B, T, d)`` from ``tokens`` ``(B, T)``, or
    ``(S, B, T, d)`` from ``(S, B, T)`` with stacked parameters. ``positions`` ``(B, T)``:
    the position id of each slot (default ``0..T-1``)."""
    embed = p["tok_embed.weight"]
    if embed.dim() == 2:
        hidden = F.embedding(tokens, embed)
    else:
        n, vocab = embed.shape[:2]
        offset = torch.arange(n, device=tokens.device).view(n, *([1] * (tokens.dim() - 1)))
        hidden = F.embedding(tokens + offset * vocab, embed.reshape(n * vocab, -1))
    pos = p.get("pos.weight")
    if pos is None:
        return hidden
    seq = tokens.shape[-1]
    if positions is not None:
        if pos.dim() == 3:
            raise ValueError("explicit positions are not supported for stacked models")
        return hidden + F.embedding(positions, pos)
    if pos.dim() == 2:
        return hidden + pos[:seq]
    return hidden + pos[:, None, :seq]


def _attend(
    spec: FusedSpec,
    qkv: torch.Tensor,
    masked_keys: torch.Tensor | None,
    positions: torch.Tensor | None,
) -> torch.Tensor:
    """Attention on a padded layout: ``qkv`` ``(..., T, 3 * H * d_head)`` -> ``(..., T, H *
    d_head)``; ``masked_keys`` ``(..., T)`` True = hidden from every query."""
    heads, d_head = spec.n_heads, spec.d_head
    lead, seq = qkv.shape[:-2], qkv.shape[-2]
    qkv = qkv.view(-1, seq, 3, heads, d_head).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)  # (L, H, T, d_head), L = prod(lead)
    if spec.rotary is not None:
        cos, sin = spec.rotary
        if positions is None:
            cos, sin = cos[:seq], sin[:seq]
        else:
            ids = positions.reshape(-1, seq)  # (L, T): stacked ids flatten like the rows
            cos, sin = cos[ids].unsqueeze(1), sin[ids].unsqueeze(1)
        cos, sin = cos.to(q.dtype), sin.to(q.dtype)
        q = _rotate(q, cos, sin, cos.shape[-1])
        k = _rotate(k, cos, sin, cos.shape[-1])
    allowed = None
    if masked_keys is not None:
        allowed = ~masked_keys.reshape(-1, 1, 1, seq)  # (L, 1, 1, T)
        if spec.causal:
            allowed = allowed & torch.ones(seq, seq, dtype=torch.bool, device=qkv.device).tril()
    out = F.scaled_dot_product_attention(
        q,
        k,
        v,
        attn_mask=allowed,
        is_causal=spec.causal and allowed is None,
        scale=1.0 / spec.scale,
    )
    if allowed is not None:
        # A query with no visible key gets a zero update (as in the native block), not NaN.
        empty = ~allowed.any(-1, keepdim=True)
        if bool(empty.any()):
            out = out.masked_fill(empty, 0.0)
    return out.transpose(1, 2).reshape(*lead, seq, heads * d_head)


def _attention(
    spec: FusedSpec,
    p: Params,
    prefix: str,
    x: torch.Tensor,
    masked_keys: torch.Tensor | None,
    positions: torch.Tensor | None,
    layout: Grouped | StackRows | None = None,
) -> torch.Tensor:
    rows = layout if isinstance(layout, StackRows) else None
    names = [f"{prefix}.{m}" for m in ("q", "k", "v")]
    weight = torch.cat([p[f"{n}.weight"] for n in names], dim=-2)
    bias = torch.cat([p[f"{n}.bias"] for n in names], dim=-1)
    qkv = _linear(x, weight, bias, rows)
    if layout is None:
        out = _attend(spec, qkv, masked_keys, positions)
    else:
        out = layout.attend(qkv, lambda t, m: _attend(spec, t, m, None))
    return _linear(out, p[f"{prefix}.o.weight"], p[f"{prefix}.o.bias"], rows)


def fused_block(
    spec: FusedSpec,
    p: Params,
    index: int,
    hidden: torch.Tensor,
    masked_keys: torch.Tensor | None = None,
    positions: torch.Tensor | None = None,
    layout: Grouped | StackRows | None = None,
) -> torch.Tensor:
    """Block ``index`` on ``hidden`` ``(B, T, d)`` (or ``(S, B, T, d)`` stacked; or the
    ``(n, d)`` real rows of a padded batch described by ``layout``).

    ``masked_keys`` ``(B, T)`` (or ``(S, B, T)``) bool, True = hidden from every query (on
    top of the causal mask); ``positions`` ``(B, T)`` (or ``(S, B, T)``) position ids for
    rotary models (default ``0..T-1``)."""
    rows = layout if isinstance(layout, StackRows) else None
    pre = f"layers.{index}"
    x = _normalise(spec.norm, p, f"{pre}.ln1", hidden, rows)
    hidden = hidden + _attention(spec, p, f"{pre}.attn", x, masked_keys, positions, layout)
    if spec.act is None:
        return hidden
    x = _normalise(spec.norm, p, f"{pre}.ln2", hidden, rows)
    mid = _linear(x, p[f"{pre}.mlp.fc_in.weight"], p[f"{pre}.mlp.fc_in.bias"], rows)
    mid = _ACTIVATIONS[spec.act](mid)
    if spec.mlp_norm is not None:
        mid = _normalise(spec.mlp_norm, p, f"{pre}.mlp.ln", mid, rows)
    out = _linear(mid, p[f"{pre}.mlp.fc_out.weight"], p[f"{pre}.mlp.fc_out.bias"], rows)
    return hidden + out


def fused_logits(
    spec: FusedSpec,
    p: Params,
    tokens: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """Logits ``(B, T, d_vocab)`` of the model with parameters ``p`` on ``tokens``
    ``(B, T)`` (stacked: ``(S, B, T, d_vocab)`` from ``(S, B, T)``).

    ``attention_mask`` (same shape as ``tokens``, True or 1 at real tokens) hides padding
    keys; a causal model ignores it (right padding cannot reach a real position).

    ``keep`` ``(n,)``: flat indices into ``B * T`` of the real tokens. Then the norms,
    products and MLPs run on those ``n`` rows alone, not on the padding, and the result is
    their logits ``(n, d_vocab)`` in that order: the same numbers as the padded forward's
    logits at those positions, for a fraction of the work when batches are ragged.
    Attention runs on padded layouts of rows of similar length (see
    :mod:`.fused_layouts`): one model's batch in :data:`ATTENTION_GROUPS` groups (a
    bidirectional model then needs ``attention_mask``).

    For a stack, ``keep`` is ``(S, n)``, model ``i``'s indices into its own ``B * T`` slots,
    distinct within a row; ``attention_mask`` is required and the logits are ``(S, n,
    d_vocab)``. A model with fewer real tokens than ``n`` lists some of its padding slots
    too: they are not computed and their logits are zeros. The real tokens of all models run
    as one flat run of rows (:class:`~hierlens.models.fused_layouts.StackRows`).
    """
    masked_keys = None
    if attention_mask is not None and not spec.causal:
        masked_keys = ~attention_mask.bool()
    if keep is None:
        hidden = fused_embed(spec, p, tokens)
        for index in range(spec.n_layers):
            hidden = fused_block(spec, p, index, hidden, masked_keys)
        hidden = _normalise(spec.final_norm, p, "ln_out", hidden)
        return _linear(hidden, p["head.weight"], p.get("head.bias"))
    stacked = p["tok_embed.weight"].dim() == 3
    if keep.dim() != (2 if stacked else 1) or tokens.dim() != keep.dim() + 1:
        raise ValueError(
            f"keep must be (n,) with (B, T) tokens for one model, (S, n) with (S, B, T) "
            f"tokens for a stack; got keep {tuple(keep.shape)}, tokens {tuple(tokens.shape)}"
        )
    if stacked and attention_mask is None:
        raise ValueError("a stack needs attention_mask with keep (to tell real tokens)")
    if not spec.causal and masked_keys is None:
        raise ValueError("a bidirectional model needs attention_mask with keep")
    if stacked:
        return _stack_logits(spec, p, tokens, attention_mask.bool(), keep)
    seq = tokens.shape[-1]
    groups = min(ATTENTION_GROUPS, tokens.shape[0])
    layout = Grouped.build(keep, tuple(tokens.shape), groups, not spec.causal)
    hidden = F.embedding(tokens.reshape(-1)[layout.keep], p["tok_embed.weight"])
    if "pos.weight" in p:
        hidden = hidden + F.embedding(layout.keep % seq, p["pos.weight"])
    for index in range(spec.n_layers):
        hidden = fused_block(spec, p, index, hidden, masked_keys, layout=layout)
    hidden = hidden.index_select(0, layout.inverse)
    hidden = _normalise(spec.final_norm, p, "ln_out", hidden)
    return _linear(hidden, p["head.weight"], p.get("head.bias"))


def _stack_logits(
    spec: FusedSpec, p: Params, tokens: torch.Tensor, real: torch.Tensor, keep: torch.Tensor
) -> torch.Tensor:
    """:func:`fused_logits` of a stack at ``keep`` ``(S, n)``: ``(S, n, d_vocab)``."""
    rows = StackRows.build(keep, real, not spec.causal)
    embed = p["tok_embed.weight"]
    n_models, vocab = embed.shape[:2]
    ids = tokens.reshape(-1).index_select(0, rows.token_slots) + rows.model * vocab
    hidden = F.embedding(ids, embed.reshape(n_models * vocab, -1))
    if "pos.weight" in p:
        pos = p["pos.weight"]
        ids = rows.positions + rows.model * pos.shape[1]
        hidden = hidden + F.embedding(ids, pos.reshape(-1, pos.shape[-1]))
    for index in range(spec.n_layers):
        hidden = fused_block(spec, p, index, hidden, layout=rows)
    hidden = _normalise(spec.final_norm, p, "ln_out", hidden, rows)
    logits = _linear(hidden, p["head.weight"], p.get("head.bias"), rows)
    out = logits.new_zeros(keep.numel(), logits.shape[-1])
    return out.index_copy(0, rows.slots, logits).view(*keep.shape, logits.shape[-1])
