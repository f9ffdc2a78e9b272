"""The ``sae-frontier`` figure: every SAE architecture across L0, judged against the
hierarchy it should find, on two kinds of data:

- **directly observed vectors**: [Costa2025]'s MP-SAE toy
  (:class:`~hierlens.models.tasks.mpsae_toy.MPSAEToy`: 3 parents with 3 children each and 8
  singletons, parents and children correlated within groups at ``within_cosine``), one
  frontier per cosine;
- **a model's activations**: a small bidirectional transformer trained on hierarchical
  filtering ([GarnierBrun2025], root classification), its residual stream captured
  per token and aligned with the tree's node values
  (:meth:`~hierlens.models.tasks.HierarchicalFilteringTask.ground_truth`); spliced CE on the
  task's own targets.

Each frontier is one fused :func:`~hierlens.sae.train_frontier` call; each SAE gets FVU,
L0, MCC, F1, uniqueness and absorption (per tree level) from
:func:`~hierlens.sae.frontier_records`. :func:`frontier_claims` condenses the records into
the two claims of the results page: [Costa2025] (MP-SAE recovers children under
correlation where the others absorb) and [Bussmann2025] / [Nabeshima2024] (Matryoshka
SAEs absorb less than BatchTopK at the same k).
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from hierlens.core.device import resolve_device
from hierlens.models import TrainConfig
from hierlens.models.capture import capture
from hierlens.models.tasks.base import pad_examples
from hierlens.models.tasks.ground_truth import ground_truth
from hierlens.models.tasks.mpsae_toy import MPSAEToy
from hierlens.models.tasks.registry import get_task
from hierlens.models.train import train
from hierlens.models.transformer import ModelConfig, build_transformer
from hierlens.sae import (
    FrontierSpec,
    frontier_records,
    spliced_ce,
    train_frontier,
)

from .sae_schedule import sae_schedule

#: the metrics drawn against L0 (``ce_loss_recovered`` where a model exists)
METRICS = ("fvu", "ce_loss_recovered", "mcc", "mean_f1", "absorption")


def toy_frontier(
    within_cosine: float,
    spec: FrontierSpec,
    *,
    n_train: int,
    n_eval: int,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int = 0,
    device: str | torch.device | None = "cpu",
) -> list[dict[str, Any]]:
    """The frontier's records on :class:`MPSAEToy` at ``within_cosine`` (held-out samples
    from another seed)."""
    dev = resolve_device(device)
    toy = MPSAEToy(within_cosine=within_cosine, seed=seed)
    train_set, held = toy.sample(n_train, seed=seed), toy.sample(n_eval, seed=seed + 10_000)
    cfg = sae_schedule(steps, batch_size, lr, seed, dev)
    saes, _ = train_frontier(spec, train_set.x, toy.dim, config=cfg)
    return frontier_records(saes, held.x.to(dev), toy.ground_truth(held), seed=seed)


def filtering_frontier(
    spec: FrontierSpec,
    *,
    task_params: dict[str, Any],
    model: dict[str, Any],
    model_steps: int,
    n_train: int,
    n_eval: int,
    steps: int,
    batch_size: int,
    lr: float,
    layer: int = -1,
    seed: int = 0,
    device: str | torch.device | None = "cpu",
    progress: bool = False,
) -> dict[str, Any]:
    """Train a transformer on hierarchical filtering (``task_params``, ``model``:
    :class:`ModelConfig` fields, ``model_steps``), capture ``blocks.<layer>.hook_resid_post``
    on ``n_train`` train and ``n_eval`` test_id sequences, and return the frontier's
    records (with spliced CE on the eval sequences' targets), the model's accuracy and the
    hook."""
    dev = resolve_device(device)
    task = get_task("hierarchical_filtering", **task_params)
    mc = ModelConfig.for_task(task, seed=seed, **model)
    net = build_transformer(mc, device=dev)
    cfg = TrainConfig(
        steps=model_steps,
        batch_size=64,
        lr=1e-3,
        warmup_steps=min(50, model_steps),
        eval_every=0,
        checkpoint_every=model_steps,
        train_pool=max(4 * n_train, 2000),
        seed=seed,
        device=str(dev),
    )
    with tempfile.TemporaryDirectory() as run_dir:
        train(net, task, cfg, run_dir, progress=progress)
    accuracy = task.evaluate(net, "test_id", n=500, device=dev)[task.main_metric]
    hook = f"blocks.{layer % mc.n_layers}.hook_resid_post"
    train_ex = task.sample(n_train, "train", seed=seed + 1)
    eval_ex = task.sample(n_eval, "test_id", seed=seed + 2)
    acts = {
        split: capture(net, ex, hook, batch_size=256, device=dev, progress=False)[hook]
        for split, ex in (("train", train_ex), ("eval", eval_ex))
    }
    truth = ground_truth(task, eval_ex)
    batch = pad_examples(eval_ex, task.pad_id)

    def spliced(sae: Any) -> dict[str, Any]:
        return spliced_ce(
            net, sae, batch.tokens, hook, targets=batch.targets,
            attention_mask=batch.attention_mask,
        )  # fmt: skip

    sae_cfg = sae_schedule(steps, batch_size, lr, seed, dev)
    saes, _ = train_frontier(spec, acts["train"], mc.d_model, config=sae_cfg, hook_name=hook)
    records = frontier_records(saes, acts["eval"].to(dev), truth, spliced=spliced, seed=seed)
    return {
        "task": task.to_dict(),
        "model": {"d_model": mc.d_model, "n_layers": mc.n_layers, "steps": model_steps},
        "model_accuracy": float(accuracy),
        "hook": hook,
        "n_features": truth.features.n_features,
        "records": records,
    }


def sae_frontier(
    spec: dict[str, Any],
    cosines: Sequence[float],
    toy: dict[str, Any],
    filtering: dict[str, Any] | None,
    *,
    seed: int = 0,
    device: str | torch.device | None = "cpu",
    progress: bool = False,
) -> dict[str, Any]:
    """The figure's data: ``spec`` (:class:`FrontierSpec` fields; the toy's width is
    ``spec["d_sae"]``), one toy frontier per within-group cosine (``toy``: keyword
    arguments of :func:`toy_frontier`) and, unless ``filtering`` is None, the
    hierarchical-filtering frontier (keyword arguments of :func:`filtering_frontier`, plus
    any :class:`FrontierSpec` fields that differ there, e.g. its ``d_sae`` and
    coefficients; Matryoshka's prefixes default to the width's quarter and half). Returns ``spec``, ``toy`` (``{"cosines", "records": [per cosine]}``,
    plus the toy's ``true_l0``), ``filtering`` and ``claims`` (:func:`frontier_claims`)."""
    frontier = FrontierSpec(**spec)
    data: dict[str, Any] = {
        "spec": frontier.to_dict(),
        "toy": {
            "cosines": [float(c) for c in cosines],
            "true_l0": MPSAEToy().expected_l0,
            "settings": dict(toy),
            "records": [
                toy_frontier(float(c), frontier, seed=seed, device=device, **toy) for c in cosines
            ],
        },
        "filtering": None,
    }
    if filtering is not None:
        params = dict(filtering)
        fields = {f.name for f in dataclasses.fields(FrontierSpec)}
        overrides = {k: params.pop(k) for k in list(params) if k in fields}
        fspec = frontier.replace(**{"matryoshka_widths": (), **overrides})
        data["filtering"] = filtering_frontier(
            fspec, seed=seed, device=device, progress=progress, **params
        )
        data["filtering"]["d_sae"] = fspec.d_sae
    data["claims"] = frontier_claims(data)
    return data


def _near(records: list[dict[str, Any]], arch: str, l0: float) -> dict[str, Any] | None:
    """The architecture's frontier point with the smallest L0 of at least ``l0`` (below
    the true L0 an SAE cannot code a parent and its child together), else its largest."""
    rows = [r for r in records if r["architecture"] == arch and np.isfinite(r["l0"])]
    above = [r for r in rows if r["l0"] >= l0]
    if above:
        return min(above, key=lambda r: r["l0"])
    return max(rows, key=lambda r: r["l0"]) if rows else None


def _level(rec: dict[str, Any], level: str, key: str) -> float | None:
    v = rec.get("per_level", {}).get(level, {}).get(key)
    return None if v is None or not np.isfinite(v) else float(v)


def frontier_claims(data: dict[str, Any]) -> dict[str, Any]:
    """The numbers behind the two results-page claims.

    ``costa``: per toy cosine and architecture, at the frontier point with the smallest L0
    of at least the toy's true L0 (1.36), the children's MCC and F1 (level 1) and the parents'
    absorption (level 0), plus the best child MCC anywhere on the frontier.
    ``matryoshka``: per dataset (each toy cosine, and filtering), for each ``k`` the
    absorption of Matryoshka and of BatchTopK.
    """
    toy = data["toy"]
    archs = list(dict.fromkeys(r["architecture"] for r in toy["records"][0]))
    costa = []
    for c, records in zip(toy["cosines"], toy["records"]):
        per_arch = {}
        for arch in archs:
            near = _near(records, arch, toy["true_l0"])
            rows = [r for r in records if r["architecture"] == arch]
            best = [_level(r, "1", "mcc") for r in rows]
            per_arch[arch] = {
                "l0": near["l0"],
                "child_mcc": _level(near, "1", "mcc"),
                "child_f1": _level(near, "1", "mean_f1"),
                "parent_absorption": _level(near, "0", "absorption"),
                "best_child_mcc": max((b for b in best if b is not None), default=None),
            }
        costa.append({"cosine": c, "architectures": per_arch})
    sets = [(f"toy cosine {c}", recs) for c, recs in zip(toy["cosines"], toy["records"])]
    if data.get("filtering"):
        sets.append(("hierarchical filtering", data["filtering"]["records"]))
    matryoshka = []
    for label, records in sets:
        pairs = []
        by = {(r["architecture"], r["value"]): r for r in records}
        for k in data["spec"]["ks"]:
            m, b = by.get(("matryoshka_batchtopk", k)), by.get(("batch_topk", k))
            if m is None or b is None:
                continue
            pairs.append({"k": k, "matryoshka": m["absorption"], "batch_topk": b["absorption"],
                          "matryoshka_l0": m["l0"], "batch_topk_l0": b["l0"]})  # fmt: skip
        matryoshka.append({"dataset": label, "pairs": pairs})
    return {"costa": costa, "matryoshka": matryoshka}


LABELS = {
    "fvu": "FVU",
    "ce_loss_recovered": "CE loss recovered",
    "mcc": "MCC (Hungarian)",
    "mean_f1": "mean F1",
    "absorption": "absorption",
}


def plot_sae_frontier(data: dict[str, Any]) -> Any:
    """One row per dataset (each toy cosine, then hierarchical filtering), one column per
    metric of :data:`METRICS` against L0 (log scale), one line per architecture."""
    from .plot import _figure

    rows = [(f"MP-SAE toy, cosine {c}", recs)
            for c, recs in zip(data["toy"]["cosines"], data["toy"]["records"])]  # fmt: skip
    if data.get("filtering"):
        rows.append(("hierarchical filtering", data["filtering"]["records"]))
    fig = _figure((3.0 * len(METRICS), 2.6 * len(rows)))
    axes = fig.subplots(len(rows), len(METRICS), squeeze=False)
    archs = list(dict.fromkeys(r["architecture"] for _, recs in rows for r in recs))
    for i, (title, records) in enumerate(rows):
        for j, metric in enumerate(METRICS):
            ax = axes[i][j]
            have = False
            for arch in archs:
                pts = sorted(
                    (r["l0"], r[metric])
                    for r in records
                    if r["architecture"] == arch
                    and r.get(metric) is not None
                    and np.isfinite(r.get(metric, np.nan))
                    and r["l0"] > 0
                )
                if pts:
                    have = True
                    ax.plot(*zip(*pts), marker="o", ms=3, label=arch)
            if not have:
                ax.text(0.5, 0.5, "no model" if metric == "ce_loss_recovered" else "n/a",
                        ha="center", va="center", transform=ax.transAxes)  # fmt: skip
            else:
                ax.set_xscale("log")
            ax.set_title(f"{title}\n{LABELS[metric]}" if j == 0 else LABELS[metric], fontsize=8)
            ax.tick_params(labelsize=7)
            if i == len(rows) - 1:
                ax.set_xlabel("L0", fontsize=8)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(archs), fontsize=8)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig
