"""How an SAE's matched latents sit in a known feature hierarchy.

The hierarchy-aware parts of :func:`~hierlens.sae.ground_truth.ground_truth_recovery`, given
the latents already matched to features and their firing patterns on the evaluation rows:

- **absorption** ([Chanin2024]): a parent's latent silent where a matched child's latent
  fires on a true child, per parent and pooled per tree level;
- **claims**: each latent claims the feature it correlates with most (when at least
  ``min_correlation``); features claimed by several latents are *split*, latents strongly
  correlated with unrelated features (neither an ancestor of the other) are *merged*.
"""

from __future__ import annotations

import numpy as np
import torch

from hierlens.models.tasks.ground_truth import GroundTruth

__all__ = ["absorption_by_parent", "latent_claims", "pooled_absorption"]


def absorption_by_parent(
    truth: GroundTruth, present: list[int], fires: dict[int, torch.Tensor], on_ev: torch.Tensor
) -> tuple[dict[int, tuple[float, int]], dict[int, list[int]]]:
    """Absorption ([Chanin2024]) of each matched parent in ``present``: over the evaluation
    rows where the parent is true and a matched child's latent fires on a true child, the
    share where the parent's latent is silent.

    ``on_ev`` ``(n_eval, n_features)`` holds the true feature states on the evaluation rows,
    ``fires`` maps each matched feature to its latent's bool firing ``(n_eval,)``. Returns
    parent -> ``(rate, n_rows)`` (rate NaN on no rows) and parent level ->
    ``[n_absorbed, n_rows, n_parents]`` summed over that level's parents."""
    graph = truth.features
    per_parent: dict[int, tuple[float, int]] = {}
    by_level: dict[int, list[int]] = {}
    for p in present:
        kids = [c for c in graph.children(p) if c in fires]
        if p not in fires or not kids:
            continue
        child_fires = torch.stack([on_ev[:, c] & fires[c] for c in kids]).any(0)
        cond = on_ev[:, p] & child_fires
        n_cond = int(cond.sum())
        n_absorbed = int((cond & ~fires[p]).sum())
        per_parent[p] = (n_absorbed / n_cond if n_cond else float("nan"), n_cond)
        acc = by_level.setdefault(graph.level[p], [0, 0, 0])
        acc[0] += n_absorbed
        acc[1] += n_cond
        acc[2] += 1
    return per_parent, by_level


def latent_claims(
    corr: np.ndarray, truth: GroundTruth, present: list[int], min_correlation: float
) -> tuple[dict[int, list[int]], dict[int, list[str]]]:
    """Which latents claim which features, from ``corr`` ``(d_sae, len(present))``, the
    correlation of every latent with every evaluated feature (column ``j`` is feature
    ``present[j]``).

    Returns feature -> latents whose best feature it is with a correlation of at least
    ``min_correlation``, and merged latent -> names of the features (two or more, some pair
    not in an ancestor relation) it correlates that strongly with. Dead (constant) latents
    claim nothing."""
    graph = truth.features
    claims: dict[int, list[int]] = {}
    merged: dict[int, list[str]] = {}
    for ell in range(corr.shape[0]):
        if not np.any(corr[ell] != 0):
            continue
        best = int(np.argmax(corr[ell]))
        if corr[ell, best] >= min_correlation:
            claims.setdefault(present[best], []).append(ell)
        strong = [present[j] for j in np.nonzero(corr[ell] >= min_correlation)[0]]
        unrelated = [
            (a, b)
            for i, a in enumerate(strong)
            for b in strong[i + 1 :]
            if a not in graph.ancestors(b) and b not in graph.ancestors(a)
        ]
        if unrelated:
            merged[ell] = [graph.names[f] for f in strong]
    return claims, merged


def pooled_absorption(by_level: dict[int, list[int]], levels: list[int]) -> float:
    """Absorbed rows over conditioning rows, pooled over the parents at ``levels`` (keys of
    ``by_level`` as :func:`absorption_by_parent` returns it); NaN when there are no rows."""
    a = sum(by_level[v][0] for v in levels)
    b = sum(by_level[v][1] for v in levels)
    return a / b if b else float("nan")
