"""The experiment behind ``sparse-probing-f1-vs-k`` (shared by ``examples/sparse_probing.py`` and
``hierlens reproduce``): test F1 of k-sparse probes vs k per layer of a Dyck transformer
[Gurnee2023]. Returns the JSON-serialisable data
that :func:`hierlens.analysis.figures.plot.plot_sparse_probing` draws.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from hierlens.core.device import resolve_device
from hierlens.models import TrainConfig
from hierlens.models.tasks.base import pad_examples
from hierlens.models.tasks.registry import get_task
from hierlens.models.train import train
from hierlens.models.transformer import ModelConfig, build_transformer
from hierlens.probes import flatten_activations, probe_sweep, token_labels

PROBE_LABELS = ("depth", "nesting", "bracket_type", "is_close")


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
