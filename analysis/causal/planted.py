"""A model with a planted mechanism: weights set by hand, the variable's subspace known.

The task: the first token is a *value* token ``v`` in ``0 .. n_values - 1``; the others are
distractors; the output at the last position is ``v``. The model (a plain ``nn.Module``):

- ``hook_embed`` ``(B, T, d)``: one-hot token embeddings;
- ``hook_mid`` ``(B, T, d)``: at every position, ``U c_v + W z_t``, with ``c_v`` the point
  ``v`` of a regular polygon in the plane, ``U`` ``(d, 2)`` an orthonormal frame (the
  planted subspace), ``z_t`` the position's distractor one-hot and ``W`` an orthonormal frame
  of the complement. ``v`` is looked up from the first token (a hard lookup, so the
  gradient never flows back into ``hook_embed``);
- logits: for each value ``j``, ``-||U^T mid_t - c_j||^2``; distractors get a constant low
  logit.

So the variable lives in ``span(U)`` at ``hook_mid`` and is absent from ``hook_embed`` at
the query. :func:`planted_pairs` gives minimal pairs for the variable ``value``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from hierlens.models.tasks.variables import MinimalPairs

__all__ = ["PlantedModel", "planted_pairs"]


class PlantedModel(nn.Module):
    """The hand-built model (see the module docstring); ``subspace`` is ``U^T`` ``(2, d)``.

    Args:
        n_values: number of value tokens (their ids are ``0 .. n_values - 1``).
        n_distractors: number of distractor tokens (ids after the values).
        seed: draws the orientation of the planted frame.
    """

    def __init__(self, n_values: int = 3, n_distractors: int = 5, seed: int = 0) -> None:
        super().__init__()
        if n_values < 2 or n_distractors < 1:
            raise ValueError("need at least two values and one distractor")
        self.n_values = n_values
        self.vocab_size = n_values + n_distractors
        d = self.vocab_size
        if n_distractors + 2 > d:
            raise ValueError("the frame and the distractors do not fit the width")
        g = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(d, d, generator=g))
        self.register_buffer("U", q[:, :2].contiguous())
        self.register_buffer("W", q[:, 2 : 2 + n_distractors].contiguous())
        angles = 2 * math.pi * torch.arange(n_values) / n_values
        self.register_buffer("codes", torch.stack([angles.cos(), angles.sin()], 1))
        self.register_buffer("embedding", torch.eye(d))
        self.hook_embed = nn.Identity()
        self.hook_mid = nn.Identity()

    @property
    def subspace(self) -> torch.Tensor:
        """The planted subspace's orthonormal basis rows ``(2, d)``."""
        return self.U.T

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, T, vocab_size)`` of tokens ``(B, T)``."""
        x = self.hook_embed(self.embedding[tokens])
        value = x[:, 0, : self.n_values].argmax(-1)  # hard lookup of the first token
        code = self.codes[value] @ self.U.T  # (B, d)
        z = x[:, :, self.n_values :] @ self.W.T  # (B, T, d)
        mid = self.hook_mid(code[:, None, :] + z)
        read = mid @ self.U  # (B, T, 2)
        dist = ((read[:, :, None, :] - self.codes[None, None]) ** 2).sum(-1)
        low = torch.full(
            (*tokens.shape, self.vocab_size - self.n_values), -100.0, device=tokens.device
        )
        return torch.cat([-dist, low], -1)


def planted_pairs(model: PlantedModel, n: int, length: int = 6, seed: int = 0) -> MinimalPairs:
    """``n`` minimal pairs for ``value``: the same distractors, different value tokens."""
    rng = np.random.default_rng(seed)
    K, V = model.n_values, model.vocab_size
    base_v = rng.integers(0, K, n)
    src_v = (base_v + rng.integers(1, K, n)) % K
    distract = rng.integers(K, V, (n, length - 1))
    base = torch.from_numpy(np.concatenate([base_v[:, None], distract], 1)).long()
    source = torch.from_numpy(np.concatenate([src_v[:, None], distract], 1)).long()
    B = torch.full((n,), length, dtype=torch.int64)
    q = B - 1
    bl, sl = torch.from_numpy(base_v).long(), torch.from_numpy(src_v).long()
    return MinimalPairs(
        variable="value",
        base=base,
        source=source,
        base_lengths=B,
        source_lengths=B.clone(),
        base_query=q,
        source_query=q.clone(),
        base_label=bl,
        source_label=sl,
        counterfactual=sl.clone(),
        candidates=torch.arange(K).expand(n, K).clone(),
        base_values={"value": bl.clone()},
        source_values={"value": sl.clone()},
        pad_id=K,
        causal=True,
    )
