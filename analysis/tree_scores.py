"""Tree projections of every layer of a run's model, scored against gold trees
[Murty2023a], kept in ``tree_scores.jsonl``
(:attr:`hierlens.models.Run.tree_scores_path`): one record per (step, split, layer, method),
a rerun replacing its own records. ``hierlens tree-score`` and the pipeline write it; the
report's per-layer section reads it."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from hierlens.core.atomic_io import write_checked_jsonl
from hierlens.models.bootstrap import MIN_SENTENCES
from hierlens.models.run import Run, open_run

from .trees.decode import tree_projection
from .trees.metrics import baseline_parse_f1, parse_f1, parse_f1_interval, tree_score
from .trees.spans import span_scores

_KEY = ("step", "split", "layer", "method")


def tree_scores_by_layer(
    run_dir: str | os.PathLike | Run,
    layers: Sequence[int] | None = None,
    *,
    step: int | None = None,
    split: str | None = None,
    n: int | None = None,
    seed: int = 0,
    method: str = "greedy",
    mask_from_layer: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Tree score and parse F1 (beside the right-, left-branching and random baselines on
    the same sentences) of the tree projections of ``layers`` (default all blocks) at
    checkpoint ``step`` (default the newest; a pretrained run's one state), on the run's
    examples of ``split`` (a task's ``test_id``, 200 sentences; a corpus's ``all``, every
    sentence, by default). Each record also holds ``parse_f1_ci``, the 95% percentile
    bootstrap interval of the parse F1 over the sentences (seeded by ``seed``), and
    ``warnings`` (fewer than :data:`~hierlens.models.bootstrap.MIN_SENTENCES` sentences).
    Returns the records and writes them to ``tree_scores.jsonl``."""
    run = open_run(run_dir)
    if not run.steps:
        raise ValueError(f"{run.path}: the run has no checkpoints yet")
    step = run.steps[-1] if step is None else step
    split = split or ("all" if run.is_pretrained else "test_id")
    if n is None and not run.is_pretrained:
        n = 200
    examples = run.examples(split, n, seed)
    gold = [ex.tree for ex in examples]
    if not examples or not all(gold):
        raise ValueError(f"{run.path}: tree scores need sentences with gold trees")
    model = run.load_model(step, device=device)
    n_layers = model.cfg.n_layers
    layers = list(range(n_layers)) if layers is None else list(layers)
    bad = [x for x in layers if not -n_layers <= x < n_layers]
    if bad:
        raise ValueError(f"layers {bad} out of range for a model of {n_layers} blocks")
    baselines = {
        f"parse_f1_{kind}": baseline_parse_f1(gold, kind) for kind in ("left", "right", "random")
    }
    notes = []
    if len(examples) < MIN_SENTENCES:
        notes.append(
            f"{len(examples)} sentences: parse F1 on fewer than {MIN_SENTENCES} sentences is "
            "noisy, see its bootstrap interval"
        )
        warnings.warn(notes[-1], stacklevel=2)
    records = []
    for layer in layers:
        scores = span_scores(
            model,
            examples,
            layer=layer,
            mask_from_layer=mask_from_layer,
            device=device,
            progress=progress,
        )
        trees = [tree_projection(s, method) for s in scores]
        records.append(
            {
                "step": step,
                "split": split,
                "n": len(examples),
                "layer": layer % n_layers,
                "method": method,
                "tree_score": tree_score(scores, trees),
                "parse_f1": parse_f1(trees, gold),
                "parse_f1_ci": list(parse_f1_interval(trees, gold, seed=seed)),
                "ci_level": 0.95,
                **baselines,
                "warnings": notes,
            }
        )
    new = {tuple(r[k] for k in _KEY) for r in records}
    path = run.tree_scores_path
    with run.lock():
        old = run.read_records(path, writer=True)
        kept = [r for r in old if tuple(r[k] for k in _KEY) not in new]
        write_checked_jsonl(path, kept + records)
    return records
