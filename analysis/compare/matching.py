"""Matching units across models (or SAEs' codes) by their correlation over the same tokens.

- :func:`unit_correlations`: the ``(d_x, d_y)`` Pearson correlations, streamed over row
  batches (sums, sums of squares and the cross product ``XᵀY`` are accumulated; units of
  zero variance get correlation 0).
- :func:`best_match` (max ``|ρ|`` per unit, both directions) and :func:`hungarian_match`
  (one-to-one assignment maximising total ``|ρ|``, ``scipy.optimize.linear_sum_assignment``).
- :func:`rosetta_sets` across ``N >= 3`` models [Dravid2023].
- :func:`localization_summary`: how much shared information is unit-aligned vs only shared
  as a subspace (after Chowdhury et al.).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence

import torch
from scipy.optimize import linear_sum_assignment

from .similarity import similarity_matrix
from .stats import MomentStats, Source, aligned_batches, check_sources, resolve


def _correlations(
    sources: Sequence[Source], pairs: Sequence[tuple[int, int]], batch_size: int, device, dtype
) -> dict[tuple[int, int], torch.Tensor]:
    _, dims = check_sources(sources)
    dev, dt = resolve(device, dtype)
    stats = MomentStats(dims, pairs, dev, dt, gram=False)
    for blocks in aligned_batches(sources, batch_size, dev, dt):
        stats.update(blocks)
    sd = [stats.cov(k).clamp_min(0).sqrt() for k in range(len(sources))]
    out = {}
    for i, j in pairs:
        den = torch.outer(sd[i], sd[j])
        c = stats.cross_cov(i, j)
        out[(i, j)] = torch.where(den > 0, c / den.clamp_min(1e-300), 0.0).clamp(-1, 1).cpu()
    return out


def unit_correlations(
    x: Source,
    y: Source,
    *,
    batch_size: int = 4096,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> torch.Tensor:
    """Pearson correlation of every unit of ``x`` ``(n, d_x)`` with every unit of ``y``
    ``(n, d_y)`` over the same ``n`` tokens: a ``(d_x, d_y)`` CPU tensor. Sources are tensors
    or ``(ActivationStore, hook)`` pairs; streamed in ``batch_size`` rows."""
    return _correlations([x, y], [(0, 1)], batch_size, device, dtype)[(0, 1)]


def _check_corr(corr: torch.Tensor) -> torch.Tensor:
    if not isinstance(corr, torch.Tensor) or corr.ndim != 2 or 0 in corr.shape:
        raise ValueError("expected a non-empty (d_x, d_y) correlation tensor")
    return corr


@dataclasses.dataclass(frozen=True)
class BestMatch:
    """Best matches in both directions (by ``|ρ|``; values keep their sign).

    Attributes:
        x_to_y, x_corr: ``(d_x,)`` index of the best unit of ``y`` for each unit of ``x``,
            and that correlation.
        y_to_x, y_corr: ``(d_y,)`` the same from ``y`` to ``x``.
        mutual: ``(m, 2)`` pairs ``(i, j)`` that are each other's best match.
    """

    x_to_y: torch.Tensor
    x_corr: torch.Tensor
    y_to_x: torch.Tensor
    y_corr: torch.Tensor
    mutual: torch.Tensor

    def mean_abs(self) -> float:
        """``½(mean_i max_j |ρ_ij| + mean_j max_i |ρ_ij|)``."""
        return 0.5 * float(self.x_corr.abs().mean() + self.y_corr.abs().mean())


def best_match(corr: torch.Tensor) -> BestMatch:
    """Best match per unit in both directions of a ``(d_x, d_y)`` correlation matrix."""
    a = _check_corr(corr).abs()
    xy, yx = a.argmax(1), a.argmax(0)
    i = torch.arange(corr.shape[0])
    mutual = torch.nonzero(yx[xy] == i).flatten()
    return BestMatch(
        x_to_y=xy,
        x_corr=corr[i, xy],
        y_to_x=yx,
        y_corr=corr[yx, torch.arange(corr.shape[1])],
        mutual=torch.stack([mutual, xy[mutual]], 1),
    )


def hungarian_match(corr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One-to-one matching maximising ``Σ |ρ|`` (``min(d_x, d_y)`` pairs).

    Returns ``(rows, cols, values)``: matched unit indices of ``x`` and ``y`` and their
    signed correlations."""
    c = _check_corr(corr)
    rows, cols = linear_sum_assignment(c.abs().double().numpy(), maximize=True)
    r, k = torch.as_tensor(rows), torch.as_tensor(cols)
    return r, k, c[r, k]


@dataclasses.dataclass(frozen=True)
class RosettaSet:
    """One unit per model whose best matches all agree.

    Attributes:
        units: ``(N,)`` unit index in each model.
        min_abs_corr, mean_abs_corr: over the ``N(N-1)/2`` model pairs.
    """

    units: tuple[int, ...]
    min_abs_corr: float
    mean_abs_corr: float


def rosetta_sets(
    sources: Sequence[Source],
    *,
    min_corr: float = 0.0,
    batch_size: int = 4096,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> list[RosettaSet]:
    """Rosetta units across ``N >= 3`` models over the same tokens (after Dravid et al.
    2023, "Rosetta Neurons: Mining the Common Units in a Model Zoo").

    A tuple ``(u_0, ..., u_{N-1})`` (one unit per model) is a Rosetta set when, for every
    pair of models ``(a, b)``, ``u_a`` and ``u_b`` are mutual best matches by ``|ρ|`` and
    ``|ρ(u_a, u_b)| >= min_corr``: every unit's nearest neighbour in every other model is
    the tuple's member there. Sets are sorted by decreasing ``min_abs_corr``.
    """
    if len(sources) < 3:
        raise ValueError(f"Rosetta sets need at least 3 models, got {len(sources)}")
    pairs = list(itertools.combinations(range(len(sources)), 2))
    corrs = _correlations(list(sources), pairs, batch_size, device, dtype)
    matches = {p: best_match(c) for p, c in corrs.items()}
    found = []
    for u0 in range(corrs[(0, 1)].shape[0]):
        units = [u0] + [int(matches[(0, b)].x_to_y[u0]) for b in range(1, len(sources))]
        vals = []
        ok = True
        for a, b in pairs:
            m = matches[(a, b)]
            ua, ub = units[a], units[b]
            v = float(corrs[(a, b)][ua, ub].abs())
            if int(m.x_to_y[ua]) != ub or int(m.y_to_x[ub]) != ua or v < min_corr:
                ok = False
                break
            vals.append(v)
        if ok:
            found.append(RosettaSet(tuple(units), min(vals), sum(vals) / len(vals)))
    return sorted(found, key=lambda s: -s.min_abs_corr)


def localization_summary(
    x: Source,
    y: Source,
    *,
    keep: float = 0.99,
    batch_size: int = 4096,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> dict[str, float]:
    """How much of what two layers share is shared unit by unit vs only as a subspace
    (the localised-vs-distributed contrast of Chowdhury et al.).

    Definitions (``ρ`` the unit correlations of ``x`` ``(n, d_x)`` and ``y`` ``(n, d_y)``):

    - ``unit_level = ½(mean_i max_j |ρ_ij| + mean_j max_i |ρ_ij|)``, the mean best-match
      correlation in both directions (1 when the units correspond one to one up to sign);
    - ``subspace_level`` = SVCCA (``keep``), the mean canonical correlation, which any
      invertible change of basis leaves unchanged; ``linear_cka`` is reported beside it;
    - ``localization = unit_level / subspace_level``: near 1 when the shared information
      sits in individual units, near 0 when it is shared only in rotated, distributed form
      (``nan`` when ``subspace_level`` is 0).
    """
    unit = best_match(unit_correlations(x, y, batch_size=batch_size, device=device, dtype=dtype))
    sims = similarity_matrix(
        [x],
        [y],
        measures=("svcca", "linear_cka"),
        keep=keep,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
    )
    unit_level = unit.mean_abs()
    sub = float(sims["svcca"][0, 0])
    return {
        "unit_level": unit_level,
        "subspace_level": sub,
        "linear_cka": float(sims["linear_cka"][0, 0]),
        "localization": unit_level / sub if sub > 0 else float("nan"),
    }
