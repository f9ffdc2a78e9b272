"""Structural probes on every layer of a pretrained model, with the controls of [Hewitt2019]:

- :func:`word_vectors_by_layer`: word vectors at every layer (0 = the embeddings as block 0
  reads them, ``blocks.0.hook_resid_pre``; ``l`` = ``blocks.{l-1}.hook_resid_post``), a
  word's vector pooled from its sub-word tokens;
- :func:`random_control`: the same architecture with freshly initialised (seeded) weights,
  the paper's control for what a probe can find in any network of that shape; layer 0 is
  its other control (embeddings only);
- :func:`chain_baseline`: the linear-chain tree (distance ``|i - j|``), scored exactly;
- :func:`structural_probes`: all of it for a model and sentences with gold trees;
- :func:`run_structural_probes`: the same for a pretrained run directory, written to
  ``probes/structural.jsonl`` (:attr:`hierlens.models.Run.structural_probe_path`), which
  ``hierlens structural-probe`` runs and the report's per-layer section reads.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hierlens.core.device import model_device
from hierlens.core.validate import check_choice

POOLS = ("mean", "first")
log = logging.getLogger(__name__)


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
    from hierlens.models.model_inputs import forward_kwargs
    from hierlens.models.text import pool_words

    check_choice("pool", pool, POOLS)
    names = ["blocks.0.hook_resid_pre", *pretrained.resid_hooks]
    wanted = set(names)
    model = pretrained.model
    device = model_device(model)
    out: dict[int, list[np.ndarray]] = {layer: [] for layer in range(len(names))}
    with torch.no_grad():
        for ex in examples:
            tokens = torch.tensor([ex.tokens], dtype=torch.long, device=device)
            _, cache = model.run_with_cache(
                tokens, names_filter=lambda n: n in wanted, **forward_kwargs(model, None, tokens)
            )
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


def shared_weight_matrices(model: torch.nn.Module, other: torch.nn.Module) -> list[str]:
    """Names of the weight matrices (parameters of two or more dimensions, which an
    initialisation draws at random) that ``model`` and ``other`` hold with equal values."""
    theirs = dict(other.named_parameters())
    return [
        name
        for name, p in model.named_parameters()
        if p.ndim >= 2 and name in theirs and torch.equal(p.detach().cpu(), theirs[name].cpu())
    ]


def chain_intervals(sentences: Sequence[Any], seed: int = 0) -> dict[str, list[float]]:
    """Bootstrap intervals (95%, sentences resampled) of :func:`chain_baseline`'s UUAS and
    Spearman: ``{"uuas_ci": [low, high], "spearman_ci": [low, high]}``."""
    from hierlens.probes.structural_metrics import spearman_interval, uuas_interval

    pred = [np.abs(np.subtract.outer(np.arange(len(s)), np.arange(len(s)))) for s in sentences]
    gold = [s.distances() for s in sentences]
    punct = [np.asarray(s.punct) for s in sentences]
    return {
        "uuas_ci": list(uuas_interval(pred, gold, punct, seed=seed)),
        "spearman_ci": list(spearman_interval(pred, gold, seed=seed)),
    }


#: which gold tree the structural probes of a corpus in each format are scored against
GOLD_TREES = {
    "ptb": "dependencies converted from the PTB brackets by head rules (Collins 1999's "
    "table, content words as heads: hierlens.models.head_rules)",
    "conllu": "the dependencies of the CoNLL-U file",
}


def random_control(pretrained: Any, seed: int, folder: Path, device: str | None) -> Any:
    """The same architecture with freshly initialised weights (seeded), loaded like the
    trained model from a temporary folder.

    The control must differ from the model: a model that is itself an untrained
    initialisation drawn with ``seed`` (``torch.manual_seed(seed)`` then the class's
    constructor) would be its own control. When every weight matrix of the control equals
    the model's, a ``ValueError`` says so; when only some do, a warning names how many."""
    from hierlens.models.pretrained import load_pretrained

    original = pretrained.model.original_model
    torch.manual_seed(seed)
    fresh = type(original)(original.config)  # the class's own weight initialisation
    # compared with the folder's weights as saved: the bridge wraps its copy's modules
    # (parameter names change, fused projections are split), so names would not match
    saved = type(original).from_pretrained(str(pretrained.path), local_files_only=True)
    shared = shared_weight_matrices(saved, fresh)
    n_matrices = sum(1 for p in saved.parameters() if p.ndim >= 2)
    del saved
    if shared and len(shared) == n_matrices:
        raise ValueError(
            f"the random-weights control (seed {seed}) has exactly the model's weights: the "
            "model is an untrained initialisation drawn with that seed, so it cannot be its "
            "own control; choose another control seed (--control-seed, [structural] "
            "control_seed) or skip the control (--controls false; controls = false)"
        )
    if shared:
        log.warning(
            "the random-weights control (seed %d) shares %d of %d weight matrices with the "
            "model (e.g. %s)",
            seed,
            len(shared),
            n_matrices,
            shared[0],
        )
    fresh.save_pretrained(str(folder))
    pretrained.tokenizer.save_pretrained(str(folder))
    return load_pretrained(folder, device=device)


def structural_probes(
    pretrained: Any,
    sentences: Sequence[Any],
    layers: Sequence[int] | None = None,
    pool: str = "mean",
    controls: bool = True,
    random_seed: int = 0,
    device: str | torch.device | None = None,
    special_tokens: Any = None,
    **fit: Any,
) -> dict[str, Any]:
    """Distance and depth probes on every layer of ``pretrained`` (and of its random-weights
    control), with the linear-chain baseline on the same test sentences.

    Args:
        pretrained: a :class:`~hierlens.models.pretrained.Pretrained`.
        sentences: :class:`~hierlens.models.sentence.Sentence` s with gold trees (at least 3).
        layers: layers to probe (0 = embeddings, ``l`` = after block ``l - 1``; default all).
        pool: a word's vector from its sub-word tokens, ``"mean"`` or ``"first"``.
        controls: also probe the random-weights control.
        random_seed: the control's weights.
        special_tokens: the frame of each sentence (a resolved
            :class:`~hierlens.models.special_tokens.SpecialTokens`, e.g. a run's, or a
            policy; None: the default policy).
        fit: options of :func:`~hierlens.probes.structural_probe_sweep` (``rank``, ``lr``,
            ``max_epochs``, ``patience``, ``batch_size``, ``fractions``, ``seed``).

    Returns:
        ``{"layers", "split": {n_train, n_dev, n_test}, "trained": [record per layer],
        "random": [...] (with ``controls``), "baseline": {"uuas", "spearman"} on the test
        sentences}``.
    """
    from hierlens.models.text import tokenize_words
    from hierlens.probes import structural_probe_sweep
    from hierlens.probes.structural import split_indices

    check_choice("pool", pool, POOLS)
    if len(sentences) < 3:
        raise ValueError(f"structural probes need at least 3 sentences, got {len(sentences)}")
    all_layers = list(range(pretrained.n_layers + 1))
    layers = all_layers if layers is None else [int(x) for x in layers]
    bad = [x for x in layers if x not in all_layers]
    if bad:
        raise ValueError(
            f"layers {bad} out of range: the model has layers 0..{pretrained.n_layers}"
        )
    # sentences longer than the model's context are left out (named in a warning), as
    # capture leaves them out
    examples = tokenize_words(
        pretrained.tokenizer, sentences, on_long="skip", special_tokens=special_tokens
    )
    sentences = [sentences[int(e.labels["index"])] for e in examples]
    if len(sentences) < 3:
        raise ValueError(
            f"structural probes need at least 3 sentences that fit the model, got {len(sentences)}"
        )
    fit = {"device": device, **fit}

    def probe(pre: Any) -> list[dict[str, Any]]:
        vectors = word_vectors_by_layer(pre, examples, pool)
        return structural_probe_sweep(vectors, list(sentences), layers=layers, **fit)

    with tempfile.TemporaryDirectory(prefix="hierlens-random-") as tmp:
        # the control first: one equal to the model is refused before any probe is fitted
        control = random_control(pretrained, random_seed, Path(tmp), device) if controls else None
        out: dict[str, Any] = {"layers": layers, "pool": pool, "trained": probe(pretrained)}
        out["split"] = {k: out["trained"][0][k] for k in ("n_train", "n_dev", "n_test")}
        if control is not None:
            out["random"] = probe(control)
            out["control_seed"] = random_seed
    _, _, test = split_indices(
        len(sentences), fit.get("fractions", (0.7, 0.15)), fit.get("seed", 0)
    )
    chain = [sentences[i] for i in test]
    out["baseline"] = {"name": "linear chain", **chain_baseline(chain), **chain_intervals(chain)}
    return out


def run_structural_probes(
    run_dir: str | os.PathLike,
    layers: Sequence[int] | None = None,
    pool: str = "mean",
    controls: bool = True,
    device: str | torch.device | None = None,
    control_seed: int = 0,
    **fit: Any,
) -> list[dict[str, Any]]:
    """:func:`structural_probes` on a pretrained run's corpus (all its sentences; the probe
    splits them itself; the control's weights drawn with ``control_seed``), written to
    ``probes/structural.jsonl``: one record per layer and model (``"model": "trained"`` or
    ``"random"``) plus one ``"model": "baseline"`` record. Each record holds its
    ``settings``: ``layer_numbering`` (0 = embeddings), ``punct`` (how punctuation entered
    the probes), ``special_tokens`` (the run's frame), ``pool`` and ``control_seed``.
    Returns the records."""
    from hierlens.core.atomic_io import write_checked_jsonl
    from hierlens.models.pretrained import load_tokenizer
    from hierlens.models.run import open_run

    from .layer_numbering import LAYER_NUMBERING

    run = open_run(run_dir)
    if not run.is_pretrained:
        raise ValueError(
            f"{run.path} is a trained run; structural probes need a pretrained run on a "
            "treebank (--model PATH --treebank FILE)"
        )
    corpus = run.corpus
    if not corpus.has_trees:
        raise ValueError(f"{corpus.path}: structural probes need gold trees (ptb or conllu)")
    result = structural_probes(
        run.pretrained(device),
        corpus.sentences("all"),
        layers,
        pool,
        controls,
        random_seed=control_seed,
        device=device,
        special_tokens=run.special_tokens,
        **fit,
    )
    tokenizer = load_tokenizer(run.config["pretrained"]["path"])
    settings = {
        "layer_numbering": LAYER_NUMBERING,
        "punct": "dropped"
        if corpus.drop_punct
        else "kept in the input; excluded from UUAS and the chain baseline",
        "special_tokens": run.special_tokens.describe(tokenizer),
        "pool": pool,
        "control_seed": control_seed if controls else None,
    }
    gold_tree = GOLD_TREES[corpus.format]
    same = {"gold_tree": gold_tree, "settings": settings}
    records = [{"model": "trained", **r, **same} for r in result["trained"]]
    records += [{"model": "random", **r, **same} for r in result.get("random", [])]
    records.append({"model": "baseline", **result["baseline"], "split": result["split"], **same})
    with run.lock():
        write_checked_jsonl(run.structural_probe_path, records)
    return records
