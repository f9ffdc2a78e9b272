"""Tree scores, unlabelled parse F1 and the branching / random-tree baselines.

Follows [Murty2023a] and [Murty2023b]. Trees are tuples of half-open word spans including ``(0, n)``, as in
:attr:`hierlens.models.tasks.base.Example.tree` and
:func:`hierlens.analysis.trees.tree_projection`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

from hierlens.core.validate import check_int
from hierlens.models.bootstrap import bootstrap_interval, ratio

from .decode import Span, Tree, as_score_matrix, sort_tree, tree_projection, tree_splits

_BASELINES = ("left", "right", "random")


def _split_gain(s: np.ndarray, i: int, j: int, k: int) -> float:
    """Score of splitting the half-open node ``(i, j)`` at ``k`` minus the mean over all splits."""
    ks = np.arange(i + 1, j)
    all_splits = s[i, ks - 1] + s[ks, j - 1]
    return float(s[i, k - 1] + s[k, j - 1] - all_splits.mean())


def sentence_tree_score(scores: torch.Tensor | np.ndarray, tree: Tree | None = None) -> float:
    """One sentence's tree score (see :func:`tree_score`); ``tree`` defaults to the greedy
    projection of ``scores``."""
    s = as_score_matrix(scores)
    if tree is None:
        tree = tree_projection(s, "greedy")
    splits = tree_splits(tree, s.shape[0])
    return sum(_split_gain(s, i, j, k) for (i, j), k in splits.items())


def tree_score(
    scores: Sequence[torch.Tensor | np.ndarray],
    trees: Sequence[Tree] | None = None,
    *,
    method: str = "greedy",
) -> float:
    """Mean tree score over sentences ([Murty2023a], "tree score").

    For one sentence with span scores ``s`` (``s[i, j]`` for the words ``i..j`` inclusive)
    and projected binary tree ``T``::

        tscore = sum over internal nodes (i, j) of T, split at k into (i, k) and (k, j), of
                 [ s(i..k-1) + s(k..j-1) ]  -  mean over k' in i+1..j-1 of [ s(i..k'-1) + s(k'..j-1) ]

    i.e. how much better the chosen split scores than a uniformly random split of the same
    node, summed over the tree (nodes of two words, with one possible split, add 0). The
    result is the mean over sentences.

    Parameters:
        scores: per sentence, its ``(n, n)`` span scores.
        trees: per sentence, the tree to score (default: the projection by ``method``).
        method: decoder used when ``trees`` is None ("greedy" as in the paper, or "exact").
    """
    if len(scores) == 0:
        raise ValueError("tree_score needs at least one sentence")
    if trees is not None and len(trees) != len(scores):
        raise ValueError(f"got {len(trees)} trees for {len(scores)} score matrices")
    total = 0.0
    for index, sc in enumerate(scores):
        tree = trees[index] if trees is not None else tree_projection(sc, method)
        total += sentence_tree_score(sc, tree)
    return total / len(scores)


def _bracket_set(tree: Iterable[Span]) -> set[Span]:
    out = set()
    for span in tree:
        a, b = (int(x) for x in span)
        if b <= a:
            raise ValueError(f"span ({a}, {b}) is empty or reversed")
        if b - a >= 2:
            out.add((a, b))
    return out


def _bracket_counts(pred: Sequence[Iterable[Span]], gold: Sequence[Iterable[Span]]) -> np.ndarray:
    """Per sentence, its matched, predicted and gold brackets (``(n, 3)``); ValueError for
    unequal numbers of trees or none."""
    if len(pred) != len(gold):
        raise ValueError(f"got {len(pred)} predicted trees for {len(gold)} gold trees")
    if len(pred) == 0:
        raise ValueError("parse F1 needs at least one tree")
    counts = np.zeros((len(pred), 3))
    for k, (p, g) in enumerate(zip(pred, gold)):
        ps, gs = _bracket_set(p), _bracket_set(g)
        counts[k] = len(ps & gs), len(ps), len(gs)
    return counts


def parse_prf(
    pred: Sequence[Iterable[Span]], gold: Sequence[Iterable[Span]]
) -> tuple[float, float, float]:
    """Corpus-level unlabelled bracketing precision, recall and F1.

    Every span of at least two words counts, the whole-sentence span ``(0, n)`` included;
    single-word spans are dropped (every tree has them). Duplicate spans within a tree count
    once. Counts are summed over the corpus before dividing: precision = matched / predicted,
    recall = matched / gold, F1 their harmonic mean (0 when nothing matches; NaN precision or
    recall when there is nothing to divide by).
    """
    matched, n_pred, n_gold = (int(c) for c in _bracket_counts(pred, gold).sum(0))
    precision = matched / n_pred if n_pred else float("nan")
    recall = matched / n_gold if n_gold else float("nan")
    if matched == 0:
        return precision, recall, 0.0 if n_pred and n_gold else float("nan")
    return precision, recall, 2 * precision * recall / (precision + recall)


def parse_f1(pred: Sequence[Iterable[Span]], gold: Sequence[Iterable[Span]]) -> float:
    """Corpus-level unlabelled bracketing F1 (see :func:`parse_prf`)."""
    return parse_prf(pred, gold)[2]


def parse_f1_interval(
    pred: Sequence[Iterable[Span]],
    gold: Sequence[Iterable[Span]],
    *,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the corpus-level :func:`parse_f1` over sentences
    (resampled with replacement, seeded; see
    :func:`hierlens.models.bootstrap.bootstrap_interval`)."""
    counts = _bracket_counts(pred, gold)

    def statistic(w: np.ndarray) -> np.ndarray:
        matched, n_pred, n_gold = (w @ counts).T
        precision, recall = ratio(matched, n_pred), ratio(matched, n_gold)
        f1 = ratio(2 * precision * recall, precision + recall)
        return np.where((matched == 0) & (n_pred > 0) & (n_gold > 0), 0.0, f1)

    return bootstrap_interval(statistic, len(pred), n_resamples=n_resamples, level=level, seed=seed)


def _check_n(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive number of words, got {n!r}")
    return int(n)


def left_branching(n: int) -> Tree:
    """The left-branching binary tree over ``n`` words: ``(0, n), (0, n-1), ..., (0, 2)``."""
    n = _check_n(n)
    return sort_tree([(0, j) for j in range(2, n + 1)] + [(0, n)])


def right_branching(n: int) -> Tree:
    """The right-branching binary tree over ``n`` words: ``(0, n), (1, n), ..., (n-2, n)``."""
    n = _check_n(n)
    return sort_tree([(i, n) for i in range(0, n - 1)] + [(0, n)])


def random_tree(n: int, rng: np.random.Generator | int | None = None) -> Tree:
    """A random binary tree over ``n`` words: split every node at a uniformly random point,
    top down (the random-split baseline; not uniform over tree shapes)."""
    n = _check_n(n)
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    spans = {(0, n)}
    stack = [(0, n)]
    while stack:
        i, j = stack.pop()
        if j - i < 2:
            continue
        k = int(gen.integers(i + 1, j))
        for child in ((i, k), (k, j)):
            if child[1] - child[0] >= 2:
                spans.add(child)
                stack.append(child)
    return sort_tree(spans)


def _n_words(tree: Iterable[Span]) -> int:
    ends = [int(b) for _, b in tree]
    if not ends:
        raise ValueError("a gold tree is empty; it must hold at least (0, n)")
    return max(ends)


def baseline_trees(gold: Sequence[Iterable[Span]], kind: str, seed: int = 0) -> list[Tree]:
    """Baseline trees with the sentence lengths of ``gold`` (``n`` = end of the widest span).

    ``kind``: "left", "right" or "random" (:func:`random_tree`, seeded by ``seed``).
    """
    if kind not in _BASELINES:
        raise ValueError(f"kind must be one of {_BASELINES}, got {kind!r}")
    rng = np.random.default_rng(seed)
    out = []
    for g in gold:
        n = _n_words(g)
        if kind == "left":
            out.append(left_branching(n))
        elif kind == "right":
            out.append(right_branching(n))
        else:
            out.append(random_tree(n, rng))
    return out


def baseline_parse_f1(
    gold: Sequence[Iterable[Span]], kind: str, *, seed: int = 0, n_samples: int = 10
) -> float:
    """Parse F1 of a baseline against ``gold``; for "random", the mean over ``n_samples``
    seeded draws of the whole corpus."""
    if kind != "random":
        return parse_f1(baseline_trees(gold, kind), gold)
    check_int("n_samples", n_samples)
    values = [parse_f1(baseline_trees(gold, kind, seed + s), gold) for s in range(n_samples)]
    return float(np.mean(values))
