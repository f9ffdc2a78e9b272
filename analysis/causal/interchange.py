"""Interchange interventions and interchange-intervention accuracy (IIA).

Follows Geiger, Lu, Icard & Potts, "Causal Abstractions of Neural Networks" (NeurIPS 2021)
and Geiger, Wu, Potts, Icard & Goodman, "Finding Alignments Between Interpretable Causal
Variables and Distributed Neural Representations" (CLeaR 2024). An *alignment* places a
high-level variable at a hook, at some positions, in a subspace with orthonormal basis rows
``R`` ``(k, d)`` (``None``: the whole activation). The interchange intervention runs the base
input and, at the aligned sites, replaces the activation ``x`` by
``x + (s - x) R^T R``, with ``s`` the source's activation at its aligned positions: the
component of ``x`` in the subspace is swapped for the source's. IIA is the fraction of
pairs whose intervened output (the argmax over the task's candidate outputs at the base's
query) is the causal model's counterfactual output.

:func:`intervened_logits` runs several alignments at once: one row group per hook, all in
one forward, each intervened at its own hook only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import torch

from hierlens.core.device import model_device
from hierlens.models.tasks.variables import MinimalPairs

from .sites import capture_sites, check_hooks, editing_hooks, forward_logits

__all__ = [
    "Alignment",
    "aligned_positions",
    "interchange_accuracy",
    "intervened_logits",
    "source_activations",
]


@dataclasses.dataclass(frozen=True)
class Alignment:
    """Where a variable is hypothesised to live.

    Attributes:
        hook: the hook name.
        positions: "query" (each input's query position) or absolute positions (pairs of
            equal length only).
        basis: ``(k, d)`` orthonormal rows spanning the subspace (``d`` = the activation's
            features flattened), or None for the whole activation.
    """

    hook: str
    positions: str | tuple[int, ...] = "query"
    basis: torch.Tensor | None = None


def aligned_positions(
    pairs: MinimalPairs, positions: str | Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(base_pos, source_pos)``, each ``(B, P)`` int64, for a positions spec."""
    if isinstance(positions, str):
        if positions != "query":
            raise ValueError(f"positions must be 'query' or a list of integers, got {positions!r}")
        return pairs.base_query[:, None], pairs.source_query[:, None]
    pos = torch.as_tensor(list(positions), dtype=torch.int64)
    if pos.dim() != 1 or len(pos) == 0:
        raise ValueError("positions must be a non-empty list of integers")
    if not pairs.same_length:
        raise ValueError("absolute positions need pairs of equal length (same_length=True)")
    if int(pos.min()) < 0 or int(pos.max()) >= int(pairs.base_lengths.min()):
        raise ValueError(
            f"positions {pos.tolist()} fall outside the shortest input "
            f"({int(pairs.base_lengths.min())} tokens)"
        )
    B = len(pairs)
    return pos.expand(B, -1), pos.expand(B, -1)


def source_activations(
    model: torch.nn.Module,
    pairs: MinimalPairs,
    hooks: Sequence[str],
    positions: str | Sequence[int],
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """The source inputs' activations at their aligned positions: ``{hook: (B, P, d)}``."""
    _, acts = capture_sites(model, pairs.source.to(device), pairs.source_lengths.to(device), hooks)
    _, spos = aligned_positions(pairs, positions)
    rows = torch.arange(len(pairs))[:, None]
    return {h: a.flatten(2)[rows, spos.to(a.device)] for h, a in acts.items()}


def intervened_logits(
    model: torch.nn.Module,
    pairs: MinimalPairs,
    hooks: Sequence[str],
    sources: Mapping[str, torch.Tensor],
    bases: Mapping[str, torch.Tensor | None],
    positions: str | Sequence[int] = "query",
) -> torch.Tensor:
    """Candidate logits ``(H, B, C)`` at the base queries after the interchange intervention
    at each hook (row group ``h`` intervened at ``hooks[h]`` only), in one forward of
    ``H * B`` rows. ``sources[h]`` ``(B, P, d)`` from :func:`source_activations`;
    ``bases[h]`` ``(k, d)`` or None. Differentiable in the bases."""
    dev = sources[hooks[0]].device
    H, B = len(hooks), len(pairs)
    bpos, _ = aligned_positions(pairs, positions)
    bpos = bpos.to(dev)
    tokens = pairs.base.to(dev).repeat(H, 1)
    lengths = pairs.base_lengths.to(dev).repeat(H)
    rows = torch.arange(B, device=dev)[:, None]

    def edit(h: int, name: str):
        R = bases[name]
        src = sources[name]

        def fn(x: torch.Tensor) -> torch.Tensor:
            shape = x.shape
            flat = x.reshape(shape[0], shape[1], -1)
            group = flat[h * B : (h + 1) * B]
            here = group[rows, bpos]  # (B, P, d)
            delta = src.to(x.dtype) - here
            if R is not None:
                delta = (delta @ R.T.to(x.dtype)) @ R.to(x.dtype)
            new_group = group.index_put((rows.expand_as(bpos), bpos), here + delta)
            out = torch.cat([flat[: h * B], new_group, flat[(h + 1) * B :]], 0)
            return out.reshape(shape)

        return fn

    with editing_hooks(model, {name: edit(h, name) for h, name in enumerate(hooks)}):
        logits = forward_logits(model, tokens, lengths)
    q = pairs.base_query.to(dev).repeat(H)
    at = logits[torch.arange(H * B, device=dev), q]
    cand = pairs.candidates.to(dev).repeat(H, 1)
    return at.gather(1, cand).reshape(H, B, -1)


def _hit(cand_logits: torch.Tensor, pairs: MinimalPairs) -> torch.Tensor:
    pred = pairs.candidates.to(cand_logits.device).gather(1, cand_logits.argmax(-1).T).T
    return pred == pairs.counterfactual.to(cand_logits.device)[None, :]


def interchange_accuracy(
    model: torch.nn.Module,
    pairs: MinimalPairs,
    alignments: Sequence[Alignment] | Alignment,
    *,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    check_minimal: bool = True,
) -> list[float]:
    """IIA of each alignment on ``pairs``: the fraction of pairs whose intervened output is
    the counterfactual. Alignments with the same positions run together (one forward per
    batch of pairs for all their hooks)."""
    if isinstance(alignments, Alignment):
        alignments = [alignments]
    if check_minimal:
        pairs.validate()
    if not alignments:
        raise ValueError("no alignments given")
    names = check_hooks(model, [a.hook for a in alignments])
    if len(set(names)) != len(alignments):
        raise ValueError("give each hook once per call (one alignment per hook)")
    dev = model_device(model, device)
    out: list[float] = [0.0] * len(alignments)
    groups: dict[object, list[int]] = {}
    for i, a in enumerate(alignments):
        groups.setdefault(a.positions, []).append(i)
    with torch.no_grad():
        for positions, idx in groups.items():
            hooks = [alignments[i].hook for i in idx]
            hits = torch.zeros(len(idx), dtype=torch.int64)
            for start in range(0, len(pairs), batch_size):
                part = pairs.subset(slice(start, start + batch_size))
                src = source_activations(model, part, hooks, positions, dev)
                bases = {}
                for i, h in zip(idx, hooks):
                    check_basis(alignments[i].basis, src[h].shape[-1], h)
                    b = alignments[i].basis
                    bases[h] = None if b is None else b.to(dev)
                logits = intervened_logits(model, part, hooks, src, bases, positions)
                hits += _hit(logits, part).sum(1).cpu()
            for j, i in enumerate(idx):
                out[i] = int(hits[j]) / len(pairs)
    return out


def check_basis(basis: torch.Tensor | None, width: int, hook: str) -> None:
    """A ``ValueError`` unless ``basis`` is None or ``(k, width)`` orthonormal rows with
    ``k <= width``."""
    if basis is None:
        return
    if not isinstance(basis, torch.Tensor) or basis.dim() != 2 or basis.shape[1] != width:
        shape = tuple(basis.shape) if isinstance(basis, torch.Tensor) else type(basis).__name__
        raise ValueError(f"the basis at {hook!r} must be (k, {width}), got {shape}")
    if basis.shape[0] > width:
        raise ValueError(f"a rank-{basis.shape[0]} subspace does not fit {hook!r} (width {width})")
    gram = basis.double() @ basis.double().T
    if not torch.allclose(gram, torch.eye(len(gram), dtype=gram.dtype), atol=1e-4):
        raise ValueError(f"the basis at {hook!r} must have orthonormal rows (B B^T = I)")
