"""Comparing the representations of checkpoints and runs on the same sentences.

- :func:`layer_hooks`: the default layers of a TransformerLens model, the embedding
  (``blocks.0.hook_resid_pre``) and every block's output (``blocks.{i}.hook_resid_post``);
- :func:`layer_activations`: an in-memory activation store of those layers over sentences
  (every real token);
- :func:`rank_collapse_by_layer`: the mean relative rank-collapse residual per layer over
  sentences (each sequence measured on its real tokens only);
- :func:`compare_runs`: the models of two runs on the same sentences (run A's task data):
  the layer x layer similarity matrices and, for every layer present in both, a matching
  summary (``hierlens compare``).
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch

from hierlens.core.atomic_io import json_safe
from hierlens.core.device import model_device
from hierlens.core.validate import check_int
from hierlens.models.capture import capture
from hierlens.models.hooks import resolve_hook_names
from hierlens.models.run import Run, open_run
from hierlens.models.store import ActivationStore

from .matching import best_match, hungarian_match, localization_summary, unit_correlations
from .rank_collapse import rank_collapse
from .similarity import MEASURES, similarity_matrix

log = logging.getLogger(__name__)


def layer_hooks(model: torch.nn.Module) -> list[str]:
    """``blocks.0.hook_resid_pre`` and ``blocks.{i}.hook_resid_post`` for every block of a
    TransformerLens model (``ValueError`` for a model without ``blocks``)."""
    blocks = getattr(model, "blocks", None)
    if blocks is None or len(blocks) == 0:
        raise ValueError("layer_hooks needs a TransformerLens model with blocks; pass hooks=")
    return ["blocks.0.hook_resid_pre"] + [f"blocks.{i}.hook_resid_post" for i in range(len(blocks))]


def layer_label(hook: str) -> str:
    """A short label of a hook for charts, in hierlens' one layer numbering
    (:mod:`~hierlens.analysis.layer_numbering`, 0 = embeddings): ``L0 embed`` for
    ``blocks.0.hook_resid_pre``, ``L{i+1}`` for ``blocks.{i}.hook_resid_post`` (the output
    of block ``i``), the hook name otherwise."""
    if hook == "blocks.0.hook_resid_pre":
        return "L0 embed"
    parts = hook.split(".")
    block_output = len(parts) == 3 and parts[0] == "blocks" and parts[2] == "hook_resid_post"
    if block_output and parts[1].isdigit():
        return f"L{int(parts[1]) + 1}"
    return hook


def layer_activations(
    model: torch.nn.Module,
    examples: Sequence[Any],
    hooks: Sequence[str],
    *,
    batch_size: int = 64,
    device: str | torch.device | None = None,
) -> ActivationStore:
    """An in-memory :class:`ActivationStore` of ``hooks`` over every real token of
    ``examples`` (task ``Example`` s or token sequences)."""
    return capture(
        model, list(examples), list(hooks), batch_size=batch_size, device=device, progress=False
    )


def rank_collapse_by_layer(
    model: torch.nn.Module, examples: Sequence[Any], *, path: str = "full"
) -> list[float]:
    """Mean relative residual from token-uniform rank 1 (Frobenius, Dong et al. 2021) of
    every layer (:func:`layer_hooks` order) over ``examples``.

    Sequences are grouped by length and each group runs as one unpadded batch, so no
    padding token enters a residual. Returns one value per layer (``1 + n_blocks``)."""
    groups: dict[int, list[torch.Tensor]] = defaultdict(list)
    for ex in examples:
        tokens = torch.as_tensor(getattr(ex, "tokens", ex)).long().flatten()
        if tokens.numel() < 2:
            continue  # one token is always rank 1
        groups[tokens.numel()].append(tokens)
    if not groups:
        raise ValueError("rank_collapse_by_layer needs sequences of at least 2 tokens")
    device = model_device(model)
    total: torch.Tensor | None = None
    count = 0
    for _, seqs in sorted(groups.items()):
        res = rank_collapse(model, torch.stack(seqs).to(device), path=path)  # (b, n_layers)
        total = res.double().sum(0) if total is None else total + res.double().sum(0)
        count += res.shape[0]
    assert total is not None
    return [float(v) for v in total / count]


def compare_runs(
    run_a: str | os.PathLike | Run,
    run_b: str | os.PathLike | Run,
    *,
    step_a: int | None = None,
    step_b: int | None = None,
    hooks: Sequence[str] | None = None,
    measures: Sequence[str] = ("linear_cka",),
    n: int = 200,
    split: str = "test_id",
    seed: int = 0,
    matching: bool = True,
    batch_size: int = 64,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """The representations of two runs' models on the same sentences.

    ``n`` sentences of run A's task (``split``, ``seed``) go through the model of run A at
    ``step_a`` and the model of run B at ``step_b`` (default: each run's newest checkpoint);
    every real token is a row. ``hooks`` (names or glob patterns, resolved on each model;
    default :func:`layer_hooks`) are the layers compared.

    Returns a JSON-able dict: ``run_a``, ``run_b``, ``step_a``, ``step_b``, ``hooks_a``,
    ``hooks_b``, ``n_sentences``, ``n_tokens``, ``similarity`` (``{measure: (len(hooks_a),
    len(hooks_b)) matrix}``, rows A's layers, columns B's; ``None`` where undefined),
    ``best_layer`` (for each layer of A, the layer of B with the largest first measure) and,
    when ``matching``, ``matching``: for each hook present in both models, the
    localisation summary (:func:`~hierlens.analysis.compare.localization_summary`), the mean
    ``|ρ|`` of the Hungarian one-to-one unit matching and the number of mutual best matches.

    Raises:
        ValueError: unknown measure or hook, a missing checkpoint, ``n < 1``, or run A's
            token ids out of range of run B's vocabulary (before any model runs).
    """
    bad = [m for m in measures if m not in MEASURES]
    if bad or not measures:
        raise ValueError(f"unknown measure(s) {bad}; choose from {MEASURES}")
    check_int("n", n)
    ra, rb = open_run(run_a), open_run(run_b)
    for run, step in ((ra, step_a), (rb, step_b)):
        if not run.steps:
            raise ValueError(f"{run.path}: no checkpoints")
        if step is not None and step not in run.steps:
            raise ValueError(f"{run.path}: no checkpoint at step {step}; available: {run.steps}")
    step_a = ra.steps[-1] if step_a is None else step_a
    step_b = rb.steps[-1] if step_b is None else step_b
    task = ra.task
    examples = task.sample(n, split, seed)
    max_id = max(int(torch.as_tensor(ex.tokens).max()) for ex in examples)
    vocab_b = rb.model_config.d_vocab
    if max_id >= vocab_b:
        raise ValueError(
            f"run A's sentences use token id {max_id}, out of range of run B's vocabulary "
            f"(d_vocab={vocab_b}): the runs do not share a tokenisation"
        )
    if ra.config.get("task") != rb.config.get("task"):
        log.warning("the runs were trained on different task settings; comparing on run A's")
    model_a = ra.load_model(step_a, device=device)
    model_b = rb.load_model(step_b, device=device)
    hooks_a = resolve_hook_names(model_a, list(hooks)) if hooks else layer_hooks(model_a)
    hooks_b = resolve_hook_names(model_b, list(hooks)) if hooks else layer_hooks(model_b)
    store_a = layer_activations(model_a, examples, hooks_a, batch_size=batch_size, device=device)
    store_b = layer_activations(model_b, examples, hooks_b, batch_size=batch_size, device=device)
    xs = [(store_a, h) for h in hooks_a]
    ys = [(store_b, h) for h in hooks_b]
    sims = similarity_matrix(xs, ys, measures=measures, device=device, seed=seed)
    first = sims[measures[0]]
    best = {}
    for i, h in enumerate(hooks_a):
        row = torch.nan_to_num(first[i], nan=float("-inf"))
        best[h] = hooks_b[int(row.argmax())] if bool(torch.isfinite(row).any()) else None
    result: dict[str, Any] = {
        "run_a": str(ra.path),
        "run_b": str(rb.path),
        "step_a": step_a,
        "step_b": step_b,
        "split": split,
        "seed": seed,
        "hooks_a": hooks_a,
        "hooks_b": hooks_b,
        "n_sentences": n,
        "n_tokens": store_a.n_tokens,
        "similarity": {m: t.tolist() for m, t in sims.items()},
        "best_layer": best,
    }
    if matching:
        rows = []
        for h in [h for h in hooks_a if h in hooks_b]:
            x, y = (store_a, h), (store_b, h)
            summary = localization_summary(x, y, device=device)
            corr = unit_correlations(x, y, device=device)
            _, _, values = hungarian_match(corr)
            rows.append(
                {
                    "hook": h,
                    **summary,
                    "hungarian_mean_abs_corr": float(values.abs().mean()),
                    "mutual_best_matches": int(best_match(corr).mutual.shape[0]),
                    "units": list(corr.shape),
                }
            )
        result["matching"] = rows
    return json_safe(result)
