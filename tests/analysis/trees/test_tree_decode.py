"""Tree-projection decoders against brute-force enumeration and plain recursive references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hierlens.analysis.trees.decode import constituent_score, tree_projection, tree_splits


def all_binary_trees(i, j):
    """Every binary tree over the half-open word span (i, j), as frozensets of spans of >= 2
    words (the root included)."""
    if j - i == 1:
        return [frozenset()]
    out = []
    for k in range(i + 1, j):
        for left in all_binary_trees(i, k):
            for right in all_binary_trees(k, j):
                out.append(left | right | {(i, j)})
    return out


def plain_total(s, spans, n):
    """Sum of s over every node: the n single words plus the given spans."""
    return sum(s[w, w] for w in range(n)) + sum(s[a, b - 1] for a, b in spans)


def plain_greedy(s, i, j):
    """The top-down split written recursively over inclusive word indices."""
    if i == j:
        return set()
    best_k, best = None, None
    for k in range(i, j):
        value = s[i, k] + s[k + 1, j]
        if best is None or value > best:
            best_k, best = k, value
    return {(i, j + 1)} | plain_greedy(s, i, best_k) | plain_greedy(s, best_k + 1, j)


def random_scores(n, seed):
    s = np.random.default_rng(seed).normal(size=(n, n))
    s[np.tril_indices(n, -1)] = np.nan
    return s


def test_catalan_counts():
    assert [len(all_binary_trees(0, n)) for n in range(1, 8)] == [1, 1, 2, 5, 14, 42, 132]


@pytest.mark.parametrize("n", range(1, 8))
def test_exact_equals_enumeration(n):
    trees = all_binary_trees(0, n)
    for seed in range(5):
        s = random_scores(n, 100 * n + seed)
        best = max(trees, key=lambda t: plain_total(s, t, n))
        got = tree_projection(torch.tensor(s), method="exact")
        assert set(got) == set(best) | {(0, n)}
        assert constituent_score(s, got) == pytest.approx(plain_total(s, best, n))


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 12])
def test_greedy_matches_plain_recursion_and_exact_never_below(n):
    for seed in range(8):
        s = random_scores(n, 7 * n + seed)
        greedy = tree_projection(s, method="greedy")
        assert set(greedy) == plain_greedy(s, 0, n - 1) | {(0, n)}
        exact = tree_projection(s, method="exact")
        assert constituent_score(s, exact) >= constituent_score(s, greedy) - 1e-12


def random_shape(i, j, rng):
    if j - i < 2:
        return set()
    k = int(rng.integers(i + 1, j))
    return {(i, j)} | random_shape(i, k, rng) | random_shape(k, j, rng)


@pytest.mark.parametrize("n", [1, 2, 4, 7, 15])
def test_known_tree_is_recovered(n):
    rng = np.random.default_rng(n)
    for _ in range(5):
        tree = random_shape(0, n, rng) | {(0, n)}
        # Constituents (and single words) score about 1, every other span about 0.
        s = rng.normal(scale=0.05, size=(n, n))
        for a, b in tree | {(w, w + 1) for w in range(n)}:
            s[a, b - 1] += 1.0
        for method in ("greedy", "exact"):
            got = tree_projection(torch.tensor(s, dtype=torch.float32), method=method)
            assert set(got) == tree
            assert list(got) == sorted(tree, key=lambda sp: (sp[0], -sp[1]))


def test_output_format():
    tree = tree_projection(random_scores(6, 0))
    assert tree[0] == (0, 6) and len(tree) == 5
    assert tree_projection(np.array([[0.3]])) == ((0, 1),)
    splits = tree_splits(tree)
    assert len(splits) == 5


def test_tree_splits_rejects_non_binary():
    with pytest.raises(ValueError, match="binary"):
        tree_splits(((0, 4), (0, 2), (2, 4), (1, 3)))
    with pytest.raises(ValueError):
        tree_splits(((0, 6), (0, 2), (2, 4), (4, 6)))  # a node with three children
    with pytest.raises(ValueError, match="whole-sentence"):
        tree_splits(((0, 2),), n=3)
    assert tree_splits(((0, 3), (1, 3))) == {(0, 3): 1, (1, 3): 2}


def test_bad_scores():
    with pytest.raises(ValueError, match="square"):
        tree_projection(np.zeros((2, 3)))
    s = random_scores(3, 0)
    s[0, 2] = np.nan
    with pytest.raises(ValueError, match="finite"):
        tree_projection(s)
    with pytest.raises(ValueError, match="method"):
        tree_projection(random_scores(3, 0), method="cky")
