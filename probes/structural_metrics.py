"""Evaluation metrics of structural probes, as defined by [Hewitt2019], section 3.

- :func:`uuas`: undirected unlabelled attachment score of the minimum spanning tree of the
  predicted distances against the gold tree's edges, punctuation excluded, over a corpus
  (correct edges / gold edges, summed over sentences);
- :func:`distance_spearman`: Spearman correlation of each word's row of predicted
  distances with its gold row, averaged over the sentences of each length, then over the
  lengths 5 to 50;
- :func:`root_accuracy`: the share of sentences whose shallowest predicted word
  (punctuation excluded) is the gold root;
- :func:`norm_spearman`: Spearman correlation of predicted and gold depths per sentence,
  averaged per length, then over the lengths 5 to 50;
- :func:`uuas_interval`, :func:`spearman_interval`: percentile bootstrap intervals of UUAS
  and distance Spearman over sentences (:mod:`hierlens.models.bootstrap`).
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from scipy.sparse.csgraph import minimum_spanning_tree
from scipy.stats import spearmanr

from hierlens.models.bootstrap import MIN_SENTENCES, bootstrap_interval, ratio

__all__ = [
    "distance_spearman",
    "mst_edges",
    "norm_spearman",
    "root_accuracy",
    "small_split_warnings",
    "spearman_interval",
    "uuas",
    "uuas_interval",
]

LENGTHS = (5, 50)


def _square(x, k: int, what: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"{what}[{k}] must be a square (n, n) matrix, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{what}[{k}] holds NaN or inf")
    return a


def _vector(x, k: int, what: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{what}[{k}] must be a vector (n,), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{what}[{k}] holds NaN or inf")
    return a


def _pairs(pred: Sequence, gold: Sequence, what: str) -> None:
    if len(pred) != len(gold):
        raise ValueError(f"{len(pred)} predicted and {len(gold)} gold {what}")
    if len(pred) == 0:
        raise ValueError(f"no {what} to score")


def _checked(pred: Sequence, gold: Sequence, check, what: str):
    """``(k, pred[k], gold[k])`` of each sentence, both read by ``check`` (:func:`_square`
    or :func:`_vector`) and of the same shape (``what``: "distances" or "depths")."""
    for k, (p, g) in enumerate(zip(pred, gold)):
        p, g = check(p, k, "pred"), check(g, k, "gold")
        if p.shape != g.shape:
            raise ValueError(f"sentence {k}: predicted {p.shape} vs gold {g.shape} {what}")
        yield k, p, g


def _keep(punct: Sequence | None, k: int, n: int) -> np.ndarray:
    if punct is None:
        return np.ones(n, dtype=bool)
    mask = np.asarray(punct[k], dtype=bool)
    if mask.shape != (n,):
        raise ValueError(f"punct[{k}] has shape {mask.shape} for {n} words")
    return ~mask


def mst_edges(dist: np.ndarray) -> set[tuple[int, int]]:
    """Undirected edges ``(i, j)``, ``i < j``, of a minimum spanning tree of the ``(n, n)``
    distance matrix (scipy's ``minimum_spanning_tree``; zero distances are kept as edges)."""
    d = np.asarray(dist, dtype=np.float64)
    n = d.shape[0]
    # csgraph reads zeros as missing edges: shift every off-diagonal weight up by a constant
    # (a spanning tree has n - 1 edges, so the same tree minimises both)
    w = d - d.min() + 1.0
    np.fill_diagonal(w, 0.0)
    tree = minimum_spanning_tree(np.triu(w)).tocoo()
    edges = {(min(i, j), max(i, j)) for i, j in zip(tree.row.tolist(), tree.col.tolist())}
    if len(edges) != n - 1:
        raise ValueError("the distance matrix does not connect all words")
    return edges


def uuas(
    pred: Sequence[np.ndarray], gold: Sequence[np.ndarray], punct: Sequence | None = None
) -> float:
    """Corpus UUAS: predicted ``(n, n)`` distances vs gold tree distances, per sentence.

    Gold edges are those of the gold tree restricted to non-punctuation words (the minimum
    spanning tree of the gold distances over them, which is the tree's own edges when
    punctuation words are leaves); predicted edges are the minimum spanning tree of the
    predicted distances over the same words. ``punct``: per-sentence boolean masks.
    """
    correct, total = _uuas_counts(pred, gold, punct)
    return float(correct.sum() / total.sum())


def _uuas_counts(
    pred: Sequence[np.ndarray], gold: Sequence[np.ndarray], punct: Sequence | None
) -> tuple[np.ndarray, np.ndarray]:
    """Per sentence ``(len(pred),)``: the predicted edges that are gold edges, and the gold
    edges (both over the non-punctuation words; see :func:`uuas`)."""
    _pairs(pred, gold, "distance matrices")
    correct, total = np.zeros(len(pred)), np.zeros(len(pred))
    for k, p, g in _checked(pred, gold, _square, "distances"):
        keep = _keep(punct, k, len(g))
        if keep.sum() < 2:
            raise ValueError(f"sentence {k} has fewer than 2 non-punctuation words; UUAS needs 2")
        idx = np.flatnonzero(keep)
        gold_edges = mst_edges(g[np.ix_(idx, idx)])
        correct[k] = len(gold_edges & mst_edges(p[np.ix_(idx, idx)]))
        total[k] = len(gold_edges)
    return correct, total


def _rowwise_spearman(p: np.ndarray, g: np.ndarray) -> list[float]:
    out = []
    for i in range(len(g)):
        if np.ptp(p[i]) == 0 or np.ptp(g[i]) == 0:
            continue
        out.append(float(spearmanr(p[i], g[i]).statistic))
    return out


def _per_length_mean(values: dict[int, list[float]], lengths: tuple[int, int]) -> float:
    lo, hi = lengths
    means = [np.mean(v) for n, v in sorted(values.items()) if lo <= n <= hi and v]
    return float(np.mean(means)) if means else float("nan")


def distance_spearman(
    pred: Sequence[np.ndarray], gold: Sequence[np.ndarray], lengths: tuple[int, int] = LENGTHS
) -> float:
    """Mean over sentence lengths in ``lengths`` (inclusive) of the mean, over the words of
    all sentences of that length, of the Spearman correlation between the word's predicted
    and gold distance rows. NaN when no sentence has such a length."""
    _pairs(pred, gold, "distance matrices")
    by_len: dict[int, list[float]] = defaultdict(list)
    for _, p, g in _checked(pred, gold, _square, "distances"):
        by_len[len(g)].extend(_rowwise_spearman(p, g))
    return _per_length_mean(by_len, lengths)


def root_accuracy(
    pred: Sequence[np.ndarray], gold: Sequence[np.ndarray], punct: Sequence | None = None
) -> float:
    """Share of sentences whose shallowest predicted non-punctuation word is the gold root
    (the shallowest gold non-punctuation word; ties in gold count as any of them)."""
    _pairs(pred, gold, "depth vectors")
    hits = 0
    for k, p, g in _checked(pred, gold, _vector, "depths"):
        keep = _keep(punct, k, len(g))
        if not keep.any():
            raise ValueError(f"sentence {k} has no non-punctuation word")
        idx = np.flatnonzero(keep)
        guess = idx[np.argmin(p[idx])]
        hits += bool(g[guess] == g[idx].min())
    return hits / len(pred)


def norm_spearman(
    pred: Sequence[np.ndarray], gold: Sequence[np.ndarray], lengths: tuple[int, int] = LENGTHS
) -> float:
    """Mean over sentence lengths in ``lengths`` of the mean per-sentence Spearman
    correlation between predicted and gold depths. NaN when no sentence qualifies."""
    _pairs(pred, gold, "depth vectors")
    by_len: dict[int, list[float]] = defaultdict(list)
    for _, p, g in _checked(pred, gold, _vector, "depths"):
        if np.ptp(p) > 0 and np.ptp(g) > 0:
            by_len[len(g)].append(float(spearmanr(p, g).statistic))
    return _per_length_mean(by_len, lengths)


def uuas_interval(
    pred: Sequence[np.ndarray],
    gold: Sequence[np.ndarray],
    punct: Sequence | None = None,
    *,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of :func:`uuas` over sentences (resampled with
    replacement, seeded; see :func:`hierlens.models.bootstrap.bootstrap_interval`)."""
    correct, total = _uuas_counts(pred, gold, punct)
    return bootstrap_interval(
        lambda w: ratio(w @ correct, w @ total),
        len(pred),
        n_resamples=n_resamples,
        level=level,
        seed=seed,
    )


def spearman_interval(
    pred: Sequence[np.ndarray],
    gold: Sequence[np.ndarray],
    lengths: tuple[int, int] = LENGTHS,
    *,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of :func:`distance_spearman` over sentences (a resample
    that holds no sentence of a length in ``lengths`` has no score and is left out)."""
    _pairs(pred, gold, "distance matrices")
    n_words = np.zeros(len(pred), dtype=np.int64)
    sums, counts = np.zeros(len(pred)), np.zeros(len(pred))
    for k, p, g in _checked(pred, gold, _square, "distances"):
        rows = _rowwise_spearman(p, g)
        n_words[k], sums[k], counts[k] = len(g), sum(rows), len(rows)
    lo, hi = lengths
    groups = [np.flatnonzero(n_words == n) for n in np.unique(n_words) if lo <= n <= hi]

    def statistic(w: np.ndarray) -> np.ndarray:
        if not groups:
            return np.full(w.shape[0], np.nan)
        means = np.stack([ratio(w[:, g] @ sums[g], w[:, g] @ counts[g]) for g in groups], 1)
        have = np.isfinite(means)
        total = np.where(have, means, 0.0).sum(1)
        return ratio(total, have.sum(1))

    return bootstrap_interval(statistic, len(pred), n_resamples=n_resamples, level=level, seed=seed)


def small_split_warnings(sentences: Sequence, splits: Sequence[np.ndarray]) -> list[str]:
    """Why the scores of a train/dev/test split of ``sentences`` mean little, if they do:
    a test split of fewer than :data:`~hierlens.models.bootstrap.MIN_SENTENCES` sentences,
    a dev split of fewer than 5 (early stopping on noise), no test sentence of a length the
    Spearman correlations count (5 to 50 words). Each is also issued as a ``UserWarning``."""
    tr, dv, te = splits
    notes = []
    if len(te) < MIN_SENTENCES:
        notes.append(
            f"the test split has {len(te)} sentences (of {len(sentences)}; train {len(tr)}, "
            f"dev {len(dv)}): UUAS and Spearman on fewer than {MIN_SENTENCES} sentences are "
            "noisy, see their bootstrap intervals"
        )
    if len(dv) < 5:
        notes.append(f"the dev split has {len(dv)} sentences: early stopping follows noise")
    lo, hi = LENGTHS
    if not any(lo <= len(sentences[i]) <= hi for i in te):
        notes.append(f"no test sentence has {lo} to {hi} words: the Spearman scores are NaN")
    for note in notes:
        warnings.warn(note, stacklevel=3)
    return notes
