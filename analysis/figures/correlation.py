"""The within-group correlation sweep of [Costa2025] (the toy of their section 4):
MP-SAE vs TopK, BatchTopK, ReLU and Matryoshka SAEs on :class:`~hierlens.models.tasks.
mpsae_toy.MPSAEToy` as the cosine within each group of features grows from 0 to 0.8.

Measures (all on held-out samples, per architecture, cosine and seed):

- ``child_best`` / ``child_hungarian``: mean over the 9 children of the best cosine of any
  decoder row with the child's direction / of the row matched to it by a one-to-one
  (Hungarian) matching of all 20 features to the 20 latents ([Kuhn1955]). ``parent_best`` /
  ``parent_hungarian``: the same over the 3 parents.
- ``absorption``: feature absorption as [Chanin2024] ("A is for Absorption") measure it,
  with the true parent direction in place of their probe: over the samples in which a parent
  *and* one of its children are active, the share in which the parent's latent (its Hungarian
  match) does not fire while another active latent carries the parent's direction, i.e. its
  contribution ``code_j * <W_dec[j], d_parent>`` is at least half the parent's true magnitude.
  ``parent_miss_with_child`` is the same share without the second condition (the parent latent
  is silent whenever a child fires), ``parent_miss_alone`` the miss rate on samples in which
  the parent is active without a child (a parent latent that is simply not learnt misses
  there too; absorption is a miss with a child only).
- ``fvu`` (fraction of variance unexplained) and ``l0`` (mean active latents) from
  :func:`~hierlens.sae.evaluate_sae`.

Every architecture and seed is trained in one fused :func:`~hierlens.sae.train_saes` run per
cosine; MP-SAE (adaptive) trains and infers with Costa et al.'s stopping rules (residual norm
below 0.05 or a support that stops changing), capped at 8 pursuit steps; the ReLU SAE's L1 coefficient is tuned to the target L0 by training a small sweep of
coefficients in the same run and keeping the one whose held-out L0 is closest.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from hierlens.core.device import resolve_device
from hierlens.models.tasks.mpsae_toy import MPSAEToy
from hierlens.sae import (
    BatchTopKSAE,
    MatchingPursuitSAE,
    MatryoshkaBatchTopKSAE,
    ReluSAE,
    TopKSAE,
    cosine_matrix,
    evaluate_sae,
    feature_recovery,
    train_saes,
)

from .sae_schedule import sae_schedule

METHODS = ("MP-SAE (adaptive)", "MP-SAE (k=2)", "TopK (k=2)", "BatchTopK", "Matryoshka", "ReLU")
METRICS = (
    "child_hungarian",
    "child_best",
    "parent_hungarian",
    "parent_best",
    "absorption",
    "parent_miss_with_child",
    "parent_miss_alone",
    "fvu",
    "l0",
)
COSINES = tuple(round(0.1 * i, 1) for i in range(9))
RELU_L1 = (0.03, 0.06, 0.1, 0.2, 0.4, 0.8)


def absorption_rates(
    codes: torch.Tensor,
    W_dec: torch.Tensor,
    true_codes: torch.Tensor,
    directions: torch.Tensor,
    parent_latent: dict[int, int],
    children_of: dict[int, list[int]],
    carry_fraction: float = 0.5,
) -> dict[str, float]:
    """Absorption of parents into children (see the module docstring for the definition).

    Args:
        codes: ``(n, d_sae)`` SAE codes. W_dec: ``(d_sae, d)`` decoder rows.
        true_codes: ``(n, n_features)`` true magnitudes. directions: ``(n_features, d)`` unit.
        parent_latent: parent feature -> its latent. children_of: parent -> child features.
        carry_fraction: how much of the parent's magnitude an absorbing latent must carry.

    Returns:
        ``absorption``, ``parent_miss_with_child``, ``parent_miss_alone``: pooled over parents
        (NaN where no sample qualifies).
    """
    absorbed = miss_child = n_child = miss_alone = n_alone = 0
    for p, lat in parent_latent.items():
        on = true_codes[:, p] != 0
        child_on = (true_codes[:, children_of[p]] != 0).any(1)
        silent = codes[:, lat] <= 0
        proj = codes * (W_dec.to(codes.dtype) @ directions[p].to(codes.dtype))  # (n, d_sae)
        proj[:, lat] = 0
        carried = (proj >= carry_fraction * true_codes[:, p : p + 1]).any(1)
        with_child = on & child_on
        alone = on & ~child_on
        n_child += int(with_child.sum())
        miss_child += int((with_child & silent).sum())
        absorbed += int((with_child & silent & carried).sum())
        n_alone += int(alone.sum())
        miss_alone += int((alone & silent).sum())
    nan = float("nan")
    return {
        "absorption": absorbed / n_child if n_child else nan,
        "parent_miss_with_child": miss_child / n_child if n_child else nan,
        "parent_miss_alone": miss_alone / n_alone if n_alone else nan,
    }


def _build(d: int, seed: int, target_l0: float, widths: tuple[int, ...], dev) -> dict[str, list]:
    mp_adaptive = dict(
        k=8,
        residual_threshold=0.05,
        stop_on_duplicate_support=True,
        stop_in_training=True,
    )
    return {
        "MP-SAE (adaptive)": [MatchingPursuitSAE(d, d, seed=seed, device=dev, **mp_adaptive)],
        "MP-SAE (k=2)": [MatchingPursuitSAE(d, d, k=2, seed=seed, device=dev)],
        "TopK (k=2)": [TopKSAE(d, d, k=2, seed=seed, device=dev)],
        "BatchTopK": [BatchTopKSAE(d, d, k=target_l0, seed=seed, device=dev)],
        "Matryoshka": [
            MatryoshkaBatchTopKSAE(
                d, d, k=target_l0, matryoshka_widths=widths, seed=seed, device=dev
            )
        ],
        "ReLU": [ReluSAE(d, d, l1_coefficient=c, seed=seed, device=dev) for c in RELU_L1],
    }


def score_sae(sae: Any, toy: MPSAEToy, held_out: Any) -> dict[str, float]:
    """The metrics of one trained SAE (module docstring) on ``held_out`` samples of ``toy``."""
    tree = held_out.tree
    dirs = tree.directions.to(sae.device)
    rec = feature_recovery(dirs, sae)
    cos = cosine_matrix(dirs.cpu(), sae.W_dec.detach().cpu()).numpy()
    assign = np.asarray(rec["assignment"])
    matched = cos[np.arange(len(assign)), assign]
    best = np.asarray(rec["best_cosine"])
    children = [c for cs in toy.children_of.values() for c in cs]
    parents = toy.parents
    with torch.no_grad():
        codes = sae.encode(held_out.x.to(sae.device)).cpu().double()
    absorb = absorption_rates(
        codes,
        sae.W_dec.detach().cpu().double(),
        held_out.codes.double(),
        tree.directions.double(),
        {p: int(assign[p]) for p in parents},
        toy.children_of,
    )
    ev = evaluate_sae(sae, held_out.x.to(sae.device))
    return {
        "child_hungarian": float(matched[children].mean()),
        "child_best": float(best[children].mean()),
        "parent_hungarian": float(matched[parents].mean()),
        "parent_best": float(best[parents].mean()),
        **absorb,
        "fvu": ev["fvu"],
        "l0": ev["l0"],
    }


def mpsae_correlation(
    cosines: Sequence[float] = COSINES,
    seeds: Sequence[int] = (0, 1, 2),
    steps: int = 3000,
    n_train: int = 50_000,
    n_eval: int = 5_000,
    batch_size: int = 200,
    lr: float = 1e-2,
    matryoshka_widths: Sequence[int] = (4, 8, 12, 16),
    data_seed: int = 0,
    device: str | torch.device | None = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Run the correlation sweep: for each within-group cosine, train every method of
    :data:`METHODS` once per seed on :class:`MPSAEToy` (basis and samples from ``data_seed``)
    and score it with :func:`score_sae`. The seeds are the SAEs' initialisations: all seeds
    of one cosine share the data and train as one fused run (members of a stack never
    interact), so the spread over seeds is the spread over initialisations.

    Returns ``target_l0`` (the toy's expected L0, 1.36), ``methods``, ``metrics``,
    ``cosines``, ``seeds``, ``rows`` (one record per cosine x seed x method: the metrics plus
    ``relu_l1_coefficient`` for ReLU) and ``summary``: method -> metric -> ``{"mean",
    "min", "max"}`` lists over seeds, one entry per cosine.
    """
    dev = resolve_device(device)
    rows: list[dict[str, Any]] = []
    for c in tqdm([float(c) for c in cosines], disable=not progress, desc="mpsae-correlation"):
        toy = MPSAEToy(within_cosine=c, seed=data_seed)
        train_set = toy.sample(n_train, seed=data_seed)
        held_out = toy.sample(n_eval, seed=data_seed + 10_000)
        per_seed = {
            int(s): _build(toy.dim, int(s), toy.expected_l0, tuple(matryoshka_widths), dev)
            for s in seeds
        }
        everything = [sae for b in per_seed.values() for g in b.values() for sae in g]
        config = sae_schedule(steps, batch_size, lr, data_seed, dev)
        train_saes(everything, train_set.x, config=config, progress=False)
        for seed, saes in per_seed.items():
            relu_l0 = [evaluate_sae(s, held_out.x.to(dev))["l0"] for s in saes["ReLU"]]
            best = int(np.argmin([abs(v - toy.expected_l0) for v in relu_l0]))
            saes["ReLU"] = [saes["ReLU"][best]]
            for name, (sae,) in saes.items():
                row = {"cosine": c, "seed": seed, "method": name, **score_sae(sae, toy, held_out)}
                if name == "ReLU":
                    row["relu_l1_coefficient"] = RELU_L1[best]
                rows.append(row)
    summary: dict[str, dict[str, dict[str, list]]] = {}
    for name in METHODS:
        summary[name] = {}
        for metric in METRICS:
            stats: dict[str, list] = {"mean": [], "min": [], "max": []}
            for c in cosines:
                vals = np.array(
                    [r[metric] for r in rows if r["method"] == name and r["cosine"] == float(c)],
                    dtype=float,
                )
                vals = vals[np.isfinite(vals)]
                for key, fn in (("mean", np.mean), ("min", np.min), ("max", np.max)):
                    stats[key].append(float(fn(vals)) if vals.size else None)
            summary[name][metric] = stats
    return {
        "target_l0": MPSAEToy().expected_l0,
        "methods": list(METHODS),
        "metrics": list(METRICS),
        "cosines": [float(c) for c in cosines],
        "seeds": [int(s) for s in seeds],
        "matryoshka_widths": list(matryoshka_widths),
        "relu_l1_sweep": list(RELU_L1),
        "rows": rows,
        "summary": summary,
    }
