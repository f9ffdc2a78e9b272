"""The experiment behind ``mpsae-hierarchy`` (shared by ``examples/sae_concepts.py`` and
``hierlens reproduce``): MP-SAE vs TopK vs ReLU on synthetic hierarchical concepts at matched
L0, recovery per tree level ([Costa2025], "From Flat to Hierarchical"). Returns the
JSON-serialisable data that :func:`hierlens.analysis.figures.plot.plot_mpsae_hierarchy` draws.
"""

from __future__ import annotations

from typing import Any

import torch

from hierlens.core.device import resolve_device
from hierlens.models.tasks.concepts import HierarchicalConcepts
from hierlens.sae import (
    MatchingPursuitSAE,
    ReluSAE,
    TopKSAE,
    evaluate_sae,
    feature_recovery,
    train_saes,
)

from .sae_schedule import sae_schedule

L1_SWEEP = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)


def concept_recovery(
    concepts: HierarchicalConcepts,
    k: int = 2,
    n_train: int = 20_000,
    n_eval: int = 4_000,
    steps: int = 3_000,
    batch_size: int = 512,
    lr: float = 3e-3,
    d_sae: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Train an MP-SAE, a TopK SAE and a sweep of ReLU SAEs (:data:`L1_SWEEP`) in one fused
    run on ``concepts``; keep the ReLU SAE whose L0 is closest to TopK's; score each method.

    Returns ``concepts`` (its parameters), ``k``, ``d_sae``, ``true_l0`` (mean number of
    active concepts per sample), ``relu_l1_coefficient``, and ``methods``: name ->
    :func:`~hierlens.sae.evaluate_sae` metrics on held-out samples plus ``mean_best_cosine``,
    ``hungarian_cosine`` and ``per_level`` (tree level as a string -> ``{"n",
    "mean_best_cosine", "hungarian_cosine"}``) from :func:`~hierlens.sae.feature_recovery`.
    """
    dev = resolve_device(device)
    train_set = concepts.sample(n_train, seed=seed)
    held_out = concepts.sample(n_eval, seed=seed + 1)
    tree = train_set.tree
    d_sae = d_sae or tree.n_concepts
    d = concepts.dim
    methods: dict[str, list] = {
        "MP-SAE": [MatchingPursuitSAE(d, d_sae, k=k, seed=seed, device=dev)],
        "TopK": [TopKSAE(d, d_sae, k=k, seed=seed, device=dev)],
        "ReLU": [ReluSAE(d, d_sae, l1_coefficient=c, seed=seed, device=dev) for c in L1_SWEEP],
    }
    everything = [s for group in methods.values() for s in group]
    config = sae_schedule(steps, batch_size, lr, seed, records=10)
    train_saes(everything, train_set.x, config=config, progress=progress)
    evals = {id(s): evaluate_sae(s, held_out.x) for s in everything}
    target_l0 = evals[id(methods["TopK"][0])]["l0"]
    relu = min(methods["ReLU"], key=lambda s: abs(evals[id(s)]["l0"] - target_l0))
    chosen = {"MP-SAE": methods["MP-SAE"][0], "TopK": methods["TopK"][0], "ReLU": relu}
    results: dict[str, Any] = {
        "concepts": concepts.to_dict(),
        "k": k,
        "d_sae": d_sae,
        "true_l0": float((held_out.codes != 0).sum(1).float().mean()),
        "relu_l1_coefficient": relu.cfg.l1_coefficient,
        "methods": {},
    }
    for name, sae in chosen.items():
        rec = feature_recovery(tree.directions.to(dev), sae, levels=tree.level)
        results["methods"][name] = {
            **evals[id(sae)],
            "mean_best_cosine": rec["mean_best_cosine"],
            "hungarian_cosine": rec["hungarian_cosine"],
            "per_level": {str(lv): v for lv, v in rec["per_level"].items()},
        }
    return results
