"""Tree projections of every layer of a run's model, scored against gold trees
[Murty2023a], kept in ``tree_scores.jsonl``
(:attr:`hierlens.models.Run.tree_scores_path`): one record per (step, split, layer, method,
settings), a rerun replacing its own records. ``hierlens tree-score`` and the pipeline write
it; the report's per-layer section reads it (:func:`read_tree_scores`).

Layers are numbered as every per-layer result of hierlens is
(:mod:`~hierlens.analysis.layer_numbering`: 0 = embeddings, layer ``l`` = the output of
block ``l - 1``); the embeddings cannot be scored (a word's embedding is the same in and out
of context), so tree scores cover layers 1 to ``n_blocks``.

Punctuation is dropped by default, as the tree-projection and unsupervised-parsing
literature scores sentences: the punctuation words are removed before the sentence is
tokenised, and the gold trees shrink to the remaining words. Kept, it attaches by the
treebank's conventions (a final period under the root), which the branching baselines
cannot predict and the model is scored on; a warning says so.

Each record holds its ``settings``: ``layer_numbering``, ``punct`` (``dropped``, ``kept``,
or ``none in the data`` for a task's sequences), ``special_tokens`` (a pretrained run's
frame) and ``mask_from_block``.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from hierlens.core.atomic_io import write_checked_jsonl
from hierlens.models.bootstrap import MIN_SENTENCES
from hierlens.models.run import Run, open_run

from .layer_numbering import LAYER_NUMBERING, block_of_layer
from .trees.decode import tree_projection
from .trees.metrics import baseline_parse_f1, parse_f1, parse_f1_interval, tree_score
from .trees.spans import span_scores

__all__ = ["read_tree_scores", "tree_scores_by_layer"]

log = logging.getLogger(__name__)

_KEY = ("step", "split", "layer", "method")
NO_PUNCT = "none in the data"  # a task's sequences mark no punctuation


def _key(record: dict[str, Any]) -> tuple:
    return (*(record.get(k) for k in _KEY), json.dumps(record.get("settings"), sort_keys=True))


def _frame(run: Run) -> str | None:
    if not run.is_pretrained:
        return None
    from hierlens.models.pretrained import load_tokenizer

    return run.special_tokens.describe(load_tokenizer(run.config["pretrained"]["path"]))


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
    drop_punct: bool = True,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Tree score and parse F1 (beside the right-, left-branching and random baselines on
    the same sentences) of the tree projections of ``layers`` (0 = embeddings, layer ``l``
    the output of block ``l - 1``; default every layer 1..n_blocks; ``-1`` the last) at
    checkpoint ``step`` (default the newest; a pretrained run's one state), on the run's
    examples of ``split`` (a task's ``test_id``, 200 sentences; a corpus's ``all``, every
    sentence, by default). ``drop_punct``: score a corpus's sentences without their
    punctuation (the default; False keeps it, with a warning, and is refused for a run that
    reads its corpus without punctuation). ``mask_from_layer`` is the first masked *block*
    (the t-shaped variant of :func:`~hierlens.analysis.trees.span_scores`). Each record also
    holds ``parse_f1_ci``, the 95% percentile bootstrap interval of the parse F1 over the
    sentences (seeded by ``seed``), and ``warnings`` (fewer than
    :data:`~hierlens.models.bootstrap.MIN_SENTENCES` sentences). Returns the records and
    writes them to ``tree_scores.jsonl``."""
    run = open_run(run_dir)
    if not run.steps:
        raise ValueError(f"{run.path}: the run has no checkpoints yet")
    if not isinstance(drop_punct, bool):
        raise TypeError(f"drop_punct must be a bool, got {drop_punct!r}")
    step = run.steps[-1] if step is None else step
    split = split or ("all" if run.is_pretrained else "test_id")
    if n is None and not run.is_pretrained:
        n = 200
    if run.is_pretrained:
        examples = run.examples(split, n, seed, drop_punct=drop_punct)
        punct = "dropped" if drop_punct or run.corpus.drop_punct else "kept"
        if punct == "kept":
            log.warning(
                "tree scores with punctuation kept: tree projections are scored on sentences "
                "without it in the literature, and the treebank's punctuation attachments "
                "(a final period under the root) move the branching baselines"
            )
    else:
        examples, punct = run.examples(split, n, seed), NO_PUNCT
    gold = [ex.tree for ex in examples]
    if not examples or not all(gold):
        raise ValueError(f"{run.path}: tree scores need sentences with gold trees")
    model = run.load_model(step, device=device)
    n_blocks = model.cfg.n_layers
    layers = list(range(1, n_blocks + 1)) if layers is None else list(layers)
    blocks = [block_of_layer(x, n_blocks) for x in layers]  # ValueError before any work
    baselines = {
        f"parse_f1_{kind}": baseline_parse_f1(gold, kind) for kind in ("left", "right", "random")
    }
    settings = {
        "layer_numbering": LAYER_NUMBERING,
        "punct": punct,
        "special_tokens": _frame(run),
        "mask_from_block": mask_from_layer,
    }
    notes = []
    if len(examples) < MIN_SENTENCES:
        notes.append(
            f"{len(examples)} sentences: parse F1 on fewer than {MIN_SENTENCES} sentences is "
            "noisy, see its bootstrap interval"
        )
        warnings.warn(notes[-1], stacklevel=2)
    records = []
    for block in blocks:
        scores = span_scores(
            model,
            examples,
            layer=block,
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
                "layer": block + 1,
                "block": block,
                "method": method,
                "tree_score": tree_score(scores, trees),
                "parse_f1": parse_f1(trees, gold),
                "parse_f1_ci": list(parse_f1_interval(trees, gold, seed=seed)),
                "ci_level": 0.95,
                **baselines,
                "warnings": notes,
                "settings": settings,
            }
        )
    new = {_key(r) for r in records}
    path = run.tree_scores_path
    with run.lock():
        old = run.read_records(path, writer=True)
        legacy = _legacy_settings(run) if any("settings" not in r for r in old) else None
        kept = [r for r in old if _key(_normalised(r, legacy)) not in new]
        write_checked_jsonl(path, kept + records)
    return records


def _legacy_settings(run: Run) -> dict[str, Any]:
    """The settings of records written before records held them: they scored the corpus as
    the run reads it, framed as the run frames its sentences."""
    punct = NO_PUNCT
    if run.is_pretrained:
        punct = "dropped" if run.corpus.drop_punct else "kept"
    return {
        "layer_numbering": LAYER_NUMBERING,
        "punct": punct,
        "special_tokens": _frame(run),
        "mask_from_block": None,  # not recorded
    }


def _normalised(record: dict[str, Any], legacy: dict[str, Any] | None) -> dict[str, Any]:
    """A record as :func:`tree_scores_by_layer` writes it now. Records written before they
    held ``settings`` numbered blocks (their ``layer`` is a block index); they get
    ``legacy`` settings."""
    if "settings" in record or legacy is None:
        return record
    block = int(record["layer"])
    return {**record, "layer": block + 1, "block": block, "settings": legacy}


def read_tree_scores(run_dir: str | os.PathLike | Run) -> list[dict[str, Any]]:
    """The records of ``tree_scores.jsonl`` (``[]`` when there is none), each in the current
    form: layers numbered 0 = embeddings, with its ``settings``."""
    run = open_run(run_dir)
    records = run.read_records(run.tree_scores_path)
    if any("settings" not in r for r in records):
        legacy = _legacy_settings(run)
        return [_normalised(r, legacy) for r in records]
    return records
