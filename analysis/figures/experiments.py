"""The experiments behind four paper figures, shared by ``examples/`` and ``hierlens reproduce``.

Each function runs one experiment and returns a JSON-serialisable dict, the data a figure in
:mod:`hierlens.analysis.figures.plot` draws:

- :func:`concept_recovery`: MP-SAE vs TopK vs ReLU on synthetic hierarchical concepts at
  matched L0, recovery per tree level ([Costa2025], "From Flat to Hierarchical").
- :func:`mdl_digits`: description length of TopK SAEs vs dictionary width on 8x8 digits, with
  the atoms of the MDL-selected, the narrowest and the widest SAE (Ayonrinde, Pearce &
  Sharkey 2024, "Interpretability as Compression").
- :func:`sparse_probing`: test F1 of k-sparse probes vs k per layer of a Dyck transformer
  [Gurnee2023].
- :func:`filtering_vs_bp`: root accuracy of a bidirectional transformer vs exact belief
  propagation per filtering level (Garnier-Brun, Mézard, Moscato & Saglietti 2025).
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hierlens.core.device import resolve_device
from hierlens.models.tasks import get_task
from hierlens.models.tasks.base import pad_examples
from hierlens.models.tasks.concepts import HierarchicalConcepts
from hierlens.models.train import TrainConfig, train
from hierlens.models.train_many import train_many
from hierlens.models.transformer import ModelConfig, build_transformer
from hierlens.probes import flatten_activations, probe_sweep, token_labels
from hierlens.sae import (
    MatchingPursuitSAE,
    ReluSAE,
    TopKSAE,
    evaluate_sae,
    feature_recovery,
    fit_mdl_sae,
    train_saes,
)
from hierlens.sae.digits import load_digits_images, load_mnist

L1_SWEEP = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)
PROBE_LABELS = ("depth", "nesting", "bracket_type", "is_close")


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
    train_saes(
        everything,
        train_set.x,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        warmup_steps=steps // 20,
        seed=seed,
        progress=progress,
        log_every=max(1, steps // 10),
    )
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


def mdl_curve(table: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per width of an :class:`~hierlens.sae.MDLSelection` table: the shortest description
    among the SAEs meeting the bound (``bits``, ``k``, ``fvu``, ``name``; None when none)."""
    out = []
    for width in sorted({r["width"] for r in table}):
        rows = [r for r in table if r["width"] == width and r["eligible"]]
        best = min(rows, key=lambda r: r["bits"]) if rows else None
        out.append(
            {
                "width": width,
                "bits": None if best is None else best["bits"],
                "k": None if best is None else best["k"],
                "fvu": None if best is None else best["fvu"],
                "name": None if best is None else best["name"],
            }
        )
    return out


def _representative(table: list[dict[str, Any]], width: int) -> str:
    """The SAE of a width shown beside the selected one: its shortest description among
    those meeting the bound, else its most accurate one."""
    rows = [r for r in table if r["width"] == width]
    eligible = [r for r in rows if r["eligible"]]
    if eligible:
        return min(eligible, key=lambda r: r["bits"])["name"]
    return min(rows, key=lambda r: r["fvu_unquantised"])["name"]


def mdl_digits(
    widths: Sequence[int] = (8, 16, 32, 64, 128, 256),
    ks: Sequence[int] = (2, 4, 8, 16, 32),
    *,
    max_fvu: float = 0.2,
    steps: int = 800,
    batch_size: int = 256,
    lr: float = 3e-3,
    seed: int = 0,
    mnist_images: str | os.PathLike | None = None,
    n_atoms: int = 64,
    out_dir: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """TopK SAEs of every ``widths`` x ``ks`` trained in one fused pass on scikit-learn's 8x8
    digits (or MNIST IDX images), each measured by its description length on a held-out
    fifth at the precision the bound ``max_fvu`` allows [Ayonrinde2024].

    Returns ``max_fvu``, ``steps``, ``n_train``/``n_test``/``pixels``, ``curve`` (per width:
    see :func:`mdl_curve`), ``selected`` (name) and ``selected_length`` (its description
    length fields), ``side`` (image side) and ``atoms``: for the narrowest, the selected and
    the widest SAE, ``{"title", "name", "n_latents", "atoms"}`` with up to ``n_atoms``
    decoder rows (most used first), each ``side * side`` pixels. SAEs are saved under
    ``out_dir/saes`` when ``out_dir`` is given.
    """
    if mnist_images is not None:
        images, _ = load_mnist(mnist_images)
    else:
        images, _ = load_digits_images()
    side = int(math.isqrt(images.shape[1]))
    perm = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed))
    n_test = images.shape[0] // 5
    test, train_set = images[perm[:n_test]], images[perm[n_test:]]
    fit = fit_mdl_sae(
        train_set,
        widths=list(widths),
        ks=list(ks),
        architecture="topk",
        max_fvu=max_fvu,
        eval_activations=test,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        out_dir=None if out_dir is None else Path(out_dir) / "saes",
        device=device,
        train_kwargs={"log_every": max(1, steps // 10), "dead_after_tokens": 20_000},
        progress=progress,
    )
    table = fit.selection.table
    points = mdl_curve(table)
    best = fit.selection.best_name
    shown = [
        ("narrowest", _representative(table, min(widths))),
        ("MDL-selected", best),
        ("widest", _representative(table, max(widths))),
    ]
    panels = []
    for title, name in shown:
        atoms = fit.saes[name].W_dec.detach().float().cpu()
        n = min(atoms.shape[0], n_atoms)
        if name in fit.selection.lengths:
            usage = fit.selection.lengths[name].firing_probability
            order = torch.as_tensor(usage).argsort(descending=True)[:n]
        else:
            order = torch.arange(n)
        panels.append(
            {
                "title": title,
                "name": name,
                "n_latents": int(atoms.shape[0]),
                "atoms": atoms[order].tolist(),
            }
        )
    length = fit.selection.best_length
    return {
        "max_fvu": max_fvu,
        "steps": steps,
        "n_train": int(train_set.shape[0]),
        "n_test": int(test.shape[0]),
        "pixels": int(images.shape[1]),
        "curve": points,
        "selected": best,
        "selected_length": {
            "bits": length.bits,
            "which_bits": length.which_bits,
            "value_bits": length.value_bits,
            "l0": length.l0,
            "fvu": length.fvu,
            "raw_bits": length.raw_bits,
        },
        "side": side,
        "atoms": panels,
    }


def sparse_probing(
    steps: int = 150,
    n_examples: int = 300,
    ks: Sequence[int] = (1, 2, 4, 8, 16),
    selection: str = "mean_diff",
    *,
    seed: int = 0,
    out_path: str | os.PathLike | None = None,
    device: str | torch.device | None = "cpu",
    progress: bool = False,
) -> dict[str, Any]:
    """k-sparse probes of a 2-layer Dyck-(2, 4) transformer [Gurnee2023].

    Trains the model for ``steps`` steps (0: untrained), captures the residual stream after
    the embedding and after each block on ``n_examples`` held-out strings, and fits probes
    for the per-token labels :data:`PROBE_LABELS` at every layer and k in one batched sweep
    (``depth`` only on brackets). Returns ``steps``, ``selection``, ``ks``, ``hooks``,
    ``labels``, ``closing_acc`` (test_id closing-bracket accuracy; None when untrained),
    ``n_probes``, ``n_tokens`` and ``f1``: label -> hook -> mean test F1 per k (macro over
    the one-vs-rest problems of a multi-class label). ``out_path``: also write every probe's
    record there (JSON lines).
    """
    dev = resolve_device(device)
    task = get_task("dyck", n_types=2, max_depth=4, min_length=4, max_length=24)
    config = ModelConfig.for_task(task, d_model=64, n_layers=2, n_heads=4, seed=seed)
    model = build_transformer(config, device=dev)
    closing_acc = None
    if steps:
        cfg = TrainConfig(
            steps=steps,
            batch_size=32,
            lr=3e-3,
            warmup_steps=min(10, steps),
            eval_every=0,
            checkpoint_every=steps,
            train_pool=2000,
            seed=seed,
            device=str(dev),
        )
        with tempfile.TemporaryDirectory() as run_dir:
            train(model, task, cfg, run_dir, progress=progress)
        closing_acc = task.evaluate(model, "test_id", n=500, device=dev)["closing_acc"]
    examples = task.sample(n_examples, "test_id", seed=seed + 1)
    batch = pad_examples(examples, task.pad_id)
    hooks = ["hook_embed"] + [f"blocks.{i}.hook_resid_post" for i in range(config.n_layers)]
    with torch.inference_mode():
        _, cache = model.run_with_cache(
            batch.tokens.to(dev), names_filter=lambda name: name in hooks
        )
    acts = {h: flatten_activations(cache[h], batch.attention_mask).float().cpu() for h in hooks}
    labels = token_labels(examples, list(PROBE_LABELS))
    labels["depth"] = np.where(labels["depth"] == 0, -1, labels["depth"])  # BOS/EOS: not words
    ks = [int(k) for k in ks]
    records = probe_sweep(
        acts,
        labels,
        ks=ks,
        selection=selection,
        seed=seed,
        device=dev,
        out_path=out_path,
        progress=progress,
    )
    scores: dict[tuple[str, str, int], list[float]] = {}
    for r in records:
        scores.setdefault((r["label"], r["hook"], r["k"]), []).append(r["f1"])
    f1 = {
        label: {h: [float(np.mean(scores[(label, h, k)])) for k in ks] for h in hooks}
        for label in labels
    }
    return {
        "steps": steps,
        "selection": selection,
        "ks": ks,
        "hooks": hooks,
        "labels": list(labels),
        "closing_acc": closing_acc,
        "n_probes": len(records),
        "n_tokens": int(next(iter(acts.values())).shape[0]),
        "f1": f1,
    }


def filtering_vs_bp(
    filter_levels: Sequence[int] = (0, 1, 2, 3, 4),
    *,
    q: int = 4,
    depth: int = 4,
    steps: int = 1000,
    n_eval: int = 2000,
    d_model: int = 64,
    n_layers: int = 4,
    batch_size: int = 128,
    train_pool: int = 60_000,
    run_dir: str | os.PathLike = "runs/filtering_vs_bp",
    resume: bool = True,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Root classification on the hierarchical filtering model with a bidirectional
    transformer vs the Bayes-optimal accuracy of exact belief propagation on the same
    held-out sequences, per filtering level k (Garnier-Brun et al. 2025).

    Trains one model per level into ``run_dir/k{level}``, all levels as one fused stack
    (:func:`~hierlens.models.train_many`; ``resume``: continue or reuse a
    finished run there; else replace it). Returns ``q``, ``depth``, ``steps``, ``n_eval``,
    ``filter_levels`` and, per level in that order, ``model_acc`` and ``bp_acc``.
    """
    levels = [int(k) for k in filter_levels]
    if not levels or any(k < 0 or k > depth for k in levels):
        raise ValueError(f"filter_levels must be a non-empty list in [0, {depth}], got {levels}")
    dev = resolve_device(device)
    tasks = [
        get_task("hierarchical_filtering", q=q, depth=depth, filter_level=level, subtask="root")
        for level in levels
    ]
    config = TrainConfig(
        steps=steps,
        batch_size=batch_size,
        lr=1e-3,
        warmup_steps=min(50, steps),
        eval_every=0,
        checkpoint_every=steps,
        train_pool=train_pool,
        device=str(dev),
    )
    model_configs = [
        ModelConfig.for_task(task, d_model=d_model, n_layers=n_layers, n_heads=4) for task in tasks
    ]
    models = [build_transformer(mc, device=dev) for mc in model_configs]
    # one model per level, all of one shape: trained as one stack
    results = train_many(
        models,
        tasks,
        config,
        [Path(run_dir) / f"k{level}" for level in levels],
        model_configs=model_configs,
        resume=resume,
        overwrite=not resume,
        progress=progress,
    )
    for level, result in zip(levels, results, strict=True):
        if result.stopped:
            raise RuntimeError(f"filtering level {level}: {result.stopped}")
    model_acc, bp_acc = [], []
    for task, model in zip(tasks, models, strict=True):
        examples = task.sample(n_eval, "test_id", seed=99)
        model_acc.append(task.evaluate(model, examples=examples, device=dev)["root_acc"])
        bp_acc.append(float(task.bp_accuracy(examples=examples)))
    return {
        "q": q,
        "depth": depth,
        "steps": steps,
        "n_eval": n_eval,
        "filter_levels": levels,
        "model_acc": model_acc,
        "bp_acc": bp_acc,
    }
