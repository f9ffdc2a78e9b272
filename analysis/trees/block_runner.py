"""Running the blocks of a TL-native model directly, on many short rows at once.

:func:`hierlens.analysis.trees.spans` (tree projections, Murty et al. 2023)
runs a model's blocks on thousands of short rows with per-row key masks. The bridge's blocks
route every operation through hook points and compute layer norms and attention op by op.
For the configurations :func:`hierlens.models.transformer.build_transformer` builds with
learned positions (LayerNorm, pre-LayerNorm or no norm; MLP activation gelu, gelu_new, relu
or silu, or attention only), :class:`BlockRunner` computes the same function with fused
kernels: ``F.layer_norm``, one product for Q, K and V, and
``F.scaled_dot_product_attention``. Any other configuration (rotary positions, RMS norms,
SoLU, grouped-query attention, score soft-capping, gated MLPs) runs through the bridge's
blocks unchanged, so the result never depends on which path ran (up to float rounding).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = ["BlockRunner", "native_parts"]

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
}


def native_parts(model: torch.nn.Module) -> torch.nn.Module:
    """The TL-native model inside a bridge (``tok_embed``, ``pos``, ``layers``), or a
    ``TypeError`` for any other model."""
    base = getattr(model, "original_model", None)
    needed = ("tok_embed", "pos", "layers")
    if base is None or not all(hasattr(base, name) for name in needed):
        raise TypeError(
            "span_scores needs a TransformerBridge built on TransformerLens' native source "
            "(hierlens.models.transformer.build_transformer); got "
            f"{type(model).__name__}"
        )
    return base


def _unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The module a bridge component wraps (or the module itself)."""
    return getattr(module, "_original_component", module)


@dataclasses.dataclass
class _Norm:
    """A LayerNorm; without ``weight`` and ``bias`` the parameter-free variant, computed in
    float32 as the native one is."""

    weight: torch.Tensor | None
    bias: torch.Tensor | None
    eps: float

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight is None and self.bias is None:
            return F.layer_norm(x.float(), x.shape[-1:], None, None, self.eps).to(x.dtype)
        return F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)


def _norm(module: torch.nn.Module) -> _Norm | None | bool:
    """A :class:`_Norm`, ``None`` for no norm, ``False`` when unsupported."""
    m = _unwrap(module)
    if isinstance(m, torch.nn.Identity):
        return None
    if isinstance(m, torch.nn.LayerNorm):
        return _Norm(m.weight, m.bias, m.eps)
    if type(m).__name__ == "NativeLayerNormPre":
        return _Norm(None, None, m.eps)
    return False


@dataclasses.dataclass
class _LeanLayer:
    """The tensors of one native block, in the layout the fused kernels take."""

    ln1: _Norm | None
    qkv_weight: torch.Tensor  # (3 * n_heads * d_head, d_model)
    qkv_bias: torch.Tensor
    o_weight: torch.Tensor
    o_bias: torch.Tensor
    n_heads: int
    d_head: int
    scale: float
    causal: bool
    ln2: _Norm | None
    fc_in: tuple[torch.Tensor, torch.Tensor] | None  # None: attention-only block
    fc_out: tuple[torch.Tensor, torch.Tensor] | None
    act: Callable[[torch.Tensor], torch.Tensor] | None


def _lean_layer(block: torch.nn.Module) -> _LeanLayer | None:
    """The fused-kernel form of a native block, or ``None`` if it uses anything else."""
    nb = _unwrap(block)
    cfg = getattr(nb, "cfg", None)
    attn = _unwrap(getattr(nb, "attn", None)) if hasattr(nb, "attn") else None
    if cfg is None or attn is None or type(attn).__name__ != "NativeAttention":
        return None
    if (
        attn.rotary is not None
        or attn.kv_repeats != 1
        or attn.attn_scores_soft_cap > 0
        or getattr(cfg, "gated_mlp", False)
    ):
        return None
    ln1 = _norm(nb.ln1)
    if ln1 is False:
        return None
    q, k, v, o = (_unwrap(getattr(attn, name)) for name in ("q", "k", "v", "o"))
    if not all(isinstance(m, torch.nn.Linear) and m.bias is not None for m in (q, k, v, o)):
        return None
    layer = _LeanLayer(
        ln1=ln1,
        qkv_weight=torch.cat([q.weight, k.weight, v.weight]),
        qkv_bias=torch.cat([q.bias, k.bias, v.bias]),
        o_weight=o.weight,
        o_bias=o.bias,
        n_heads=attn.n_heads,
        d_head=attn.d_head,
        scale=float(attn.scale),
        causal=bool(attn.causal),
        ln2=None,
        fc_in=None,
        fc_out=None,
        act=None,
    )
    if cfg.attn_only:
        return layer
    ln2 = _norm(nb.ln2)
    mlp = _unwrap(nb.mlp)
    act_name = (cfg.act_fn or "gelu").lower()
    if ln2 is False or type(mlp).__name__ != "NativeMLP" or act_name not in _ACTIVATIONS:
        return None
    if getattr(mlp, "ln", None) is not None:
        return None
    fc_in, fc_out = _unwrap(mlp.fc_in), _unwrap(mlp.fc_out)
    layer.ln2 = ln2
    layer.fc_in = (fc_in.weight, fc_in.bias)
    layer.fc_out = (fc_out.weight, fc_out.bias)
    layer.act = _ACTIVATIONS[act_name]
    return layer


def _lean_block(
    layer: _LeanLayer, hidden: torch.Tensor, masked_keys: torch.Tensor | None
) -> torch.Tensor:
    """One block on ``hidden`` ``(B, T, d)`` with keys ``masked_keys`` ``(B, T)`` hidden."""
    batch, seq, _ = hidden.shape
    x = hidden if layer.ln1 is None else layer.ln1(hidden)
    qkv = F.linear(x, layer.qkv_weight, layer.qkv_bias)
    qkv = qkv.view(batch, seq, 3, layer.n_heads, layer.d_head).permute(2, 0, 3, 1, 4)
    allowed = None
    if masked_keys is not None:
        allowed = ~masked_keys[:, None, None, :]  # (B, 1, 1, T)
        if layer.causal:
            tril = torch.ones(seq, seq, dtype=torch.bool, device=hidden.device).tril()
            allowed = allowed & tril
    attn = F.scaled_dot_product_attention(
        qkv[0],
        qkv[1],
        qkv[2],
        attn_mask=allowed,
        is_causal=layer.causal and allowed is None,
        scale=1.0 / layer.scale,
    )
    if allowed is not None:
        # A query with no visible key gets a zero update (as in the native block), not NaN.
        empty = ~allowed.any(-1, keepdim=True)  # (B, 1, T or 1, 1)
        if bool(empty.any()):
            attn = attn.masked_fill(empty, 0.0)
    attn = attn.transpose(1, 2).reshape(batch, seq, -1)
    hidden = hidden + F.linear(attn, layer.o_weight, layer.o_bias)
    if layer.fc_in is None:
        return hidden
    x = hidden if layer.ln2 is None else layer.ln2(hidden)
    mid = layer.act(F.linear(x, *layer.fc_in))
    return hidden + F.linear(mid, *layer.fc_out)


class BlockRunner:
    """Runs the blocks of a native bridge directly, with per-row key masks and a stop layer.

    Blocks of a supported configuration (see the module docstring) run through fused kernels;
    the others through the bridge. ``lean=False`` forces the bridge for every block.
    """

    def __init__(self, model: torch.nn.Module, *, lean: bool = True) -> None:
        self.base = native_parts(model)
        param = next(model.parameters(), None)
        self.device = param.device if param is not None else torch.device("cpu")
        self.lean = [_lean_layer(b) if lean else None for b in self.base.layers]

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device).expand(tokens.shape[0], -1)
        hidden = self.base.tok_embed(tokens)
        if self.base.pos is not None:
            hidden = hidden + self.base.pos(positions)
        return hidden

    def blocks(
        self,
        hidden: torch.Tensor,
        first: int,
        last: int,
        masked_keys: torch.Tensor | None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run blocks ``first..last`` (inclusive) on ``hidden`` ``(B, T, d)``.

        ``masked_keys`` ``(B, T)`` bool, True = hidden from every query; ``positions``
        ``(B, T)`` the position id of each slot (default ``0..T-1``, used by rotary models)."""
        batch, seq = hidden.shape[:2]
        mask = None if masked_keys is None else masked_keys[:, None, None, :]
        for index in range(first, last + 1):
            lean = self.lean[index]
            if lean is not None:
                hidden = _lean_block(lean, hidden, masked_keys)
                continue
            if positions is None:
                positions = torch.arange(seq, device=hidden.device).expand(batch, -1)
            out = self.base.layers[index](hidden, attention_mask=mask, position_ids=positions)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden
