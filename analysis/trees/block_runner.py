"""Running the blocks of a TL-native model directly, on many short rows at once.

:func:`hierlens.analysis.trees.spans` (tree projections, Murty et al. 2023) runs a model's
blocks on thousands of short rows with per-row key masks and position ids. The bridge's
blocks route every operation through hook points and compute attention and the norms op by
op. For every configuration :func:`hierlens.models.transformer.build_transformer` builds,
:class:`BlockRunner` runs the fused block of :mod:`hierlens.models.fused` instead (the same
code the training loop differentiates: one Q/K/V product,
``F.scaled_dot_product_attention``, fused norms). Any other native configuration
(grouped-query attention, gated MLPs, soft-capping) runs through the bridge's blocks
unchanged, so the result never depends on which path ran (up to float rounding).
"""

from __future__ import annotations

import torch

from hierlens.core.device import model_device
from hierlens.models.fused import fused_block, fused_embed, fused_spec, native_model, native_params

__all__ = ["BlockRunner", "native_parts"]


def native_parts(model: torch.nn.Module) -> torch.nn.Module:
    """The TL-native model inside a bridge (``tok_embed``, ``pos``, ``layers``), or a
    ``TypeError`` for any other model."""
    base = native_model(model)
    if base is None:
        raise TypeError(
            "span_scores needs a TransformerBridge built on TransformerLens' native source "
            "(hierlens.models.transformer.build_transformer); got "
            f"{type(model).__name__}"
        )
    return base


class BlockRunner:
    """Runs the blocks of a native bridge directly, with per-row key masks and a stop layer.

    ``fused`` is True when the model's configuration runs on the fused block (see the module
    docstring); ``lean=False`` forces the bridge's own blocks (for comparisons).
    """

    def __init__(self, model: torch.nn.Module, *, lean: bool = True) -> None:
        self.base = native_parts(model)
        self.device = model_device(model)
        self.spec = fused_spec(model) if lean else None
        self.params = native_params(model)
        self.n_models: int | None = None  # a stack of this many models (see stacked)

    @classmethod
    def stacked(cls, models: list[torch.nn.Module]) -> BlockRunner | None:
        """One runner for S models of one shape on the fused block, parameters stacked on a
        leading model axis: :meth:`embed` and :meth:`blocks` then take and give ``(S, ...)``
        hidden states (masks and positions are shared). ``None`` when the models do not all
        run on the fused block with equal shapes and devices."""
        runners = []
        for model in models:
            try:
                runners.append(cls(model))
            except TypeError:
                return None
        first = runners[0]
        shapes = {n: p.shape for n, p in first.params.items()}
        for r in runners:
            same = {n: p.shape for n, p in r.params.items()} == shapes
            if r.spec is None or r.spec != first.spec or not same or r.device != first.device:
                return None
        with torch.no_grad():
            first.params = {n: torch.stack([r.params[n] for r in runners]) for n in shapes}
        first.n_models = len(runners)
        return first

    def _shared(self, values: torch.Tensor | None) -> torch.Tensor | None:
        """A per-row mask or position table ``(B, T)``, as ``(S, B, T)`` for a stack."""
        if values is None or self.n_models is None:
            return values
        return values.expand(self.n_models, *values.shape)

    @property
    def fused(self) -> bool:
        return self.spec is not None

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token plus learned-position embeddings ``(B, T, d)`` of ``tokens`` ``(B, T)`` at
        positions ``0..T-1`` (rotary models add positions inside attention)."""
        if self.spec is not None:
            return fused_embed(self.spec, self.params, self._shared(tokens))
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
        """Run blocks ``first..last`` (inclusive) on ``hidden`` ``(B, T, d)`` (a stack:
        ``(S, B, T, d)``).

        ``masked_keys`` ``(B, T)`` bool, True = hidden from every query; ``positions``
        ``(B, T)`` the position id of each slot (default ``0..T-1``, used by rotary models)."""
        if self.spec is not None:
            masked_keys, positions = self._shared(masked_keys), self._shared(positions)
            for index in range(first, last + 1):
                hidden = fused_block(self.spec, self.params, index, hidden, masked_keys, positions)
            return hidden
        batch, seq = hidden.shape[:2]
        if positions is None:
            positions = torch.arange(seq, device=hidden.device).expand(batch, -1)
        mask = None if masked_keys is None else masked_keys[:, None, None, :]
        for index in range(first, last + 1):
            out = self.base.layers[index](hidden, attention_mask=mask, position_ids=positions)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden
