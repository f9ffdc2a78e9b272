"""Tree score, parse F1 and baselines on hand-made cases and brute-force references."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from hierlens.analysis.trees.decode import tree_projection, tree_splits
from hierlens.analysis.trees.metrics import (
    baseline_parse_f1,
    baseline_trees,
    left_branching,
    parse_f1,
    parse_prf,
    random_tree,
    right_branching,
    sentence_tree_score,
    tree_score,
)


def test_parse_f1_hand_cases():
    gold = [((0, 4), (0, 2), (2, 4))]
    assert parse_f1(gold, gold) == 1.0
    # right-branching vs left-branching over 4 words share only the whole sentence
    p, r, f = parse_prf([((0, 4), (1, 4), (2, 4))], [((0, 4), (0, 3), (0, 2))])
    assert (p, r, f) == pytest.approx((1 / 3, 1 / 3, 1 / 3))
    # single-word spans never count, even when listed
    assert parse_f1([((0, 2), (0, 1), (1, 2))], [((0, 2),)]) == 1.0
    # a non-binary gold tree: 2 of 3 predicted brackets match 2 of 2 gold brackets
    p, r, f = parse_prf([((0, 3), (1, 3))], [((0, 3),)])
    assert (p, r) == pytest.approx((0.5, 1.0))
    assert f == pytest.approx(2 * 0.5 / 1.5)


def test_parse_f1_is_corpus_level():
    pred = [((0, 2),), ((0, 5), (0, 4), (0, 3), (0, 2))]
    gold = [((0, 2),), ((0, 5), (1, 5), (2, 5), (3, 5))]
    # sentence 1: 1/1 matched; sentence 2: 1/4 matched -> corpus 2/5 (sentence mean would be 5/8)
    p, r, f = parse_prf(pred, gold)
    assert p == pytest.approx(2 / 5) and r == pytest.approx(2 / 5) and f == pytest.approx(2 / 5)


def test_parse_f1_no_match_and_errors():
    assert parse_f1([((0, 3), (0, 2))], [((1, 3),)]) == 0.0
    with pytest.raises(ValueError, match="2 gold"):
        parse_f1([((0, 2),)], [((0, 2),), ((0, 2),)])
    with pytest.raises(ValueError):
        parse_f1([], [])
    with pytest.raises(ValueError, match="empty"):
        parse_f1([((2, 2),)], [((0, 2),)])


def test_branching_trees():
    assert left_branching(1) == ((0, 1),)
    assert left_branching(4) == ((0, 4), (0, 3), (0, 2))
    assert right_branching(4) == ((0, 4), (1, 4), (2, 4))
    assert right_branching(2) == ((0, 2),)
    for n in range(1, 9):
        tree_splits(left_branching(n), n)
        tree_splits(right_branching(n), n)
    with pytest.raises(ValueError):
        left_branching(0)


def test_random_tree_is_binary_seeded_and_uniform_at_the_root():
    for n in range(1, 12):
        for seed in range(5):
            tree = random_tree(n, seed)
            assert len(tree_splits(tree, n)) == n - 1
            assert random_tree(n, seed) == tree
    rng = np.random.default_rng(0)
    roots = Counter(tree_splits(random_tree(4, rng))[(0, 4)] for _ in range(3000))
    for k in (1, 2, 3):
        assert abs(roots[k] / 3000 - 1 / 3) < 0.04


def test_baselines():
    gold = [left_branching(n) for n in (2, 5, 7)]
    assert baseline_parse_f1(gold, "left") == 1.0
    right = baseline_parse_f1(gold, "right")
    # shared brackets: (0,2); (0,5); (0,7) -> 3 of 1+4+6 = 11
    assert right == pytest.approx(3 / 11)
    rand = baseline_parse_f1(gold, "random", n_samples=20)
    assert right < rand < 1.0
    trees = baseline_trees(gold, "random", seed=3)
    assert trees == baseline_trees(gold, "random", seed=3)
    assert [max(b for _, b in t) for t in trees] == [2, 5, 7]
    with pytest.raises(ValueError, match="kind"):
        baseline_trees(gold, "balanced")


def plain_tree_score(s, tree):
    """Sum over nodes of (chosen split - mean over all splits), by explicit loops."""
    spans = set(tree)
    total = 0.0
    for i, j in spans:
        if j - i < 2:
            continue
        values = {k: s[i, k - 1] + s[k, j - 1] for k in range(i + 1, j)}
        chosen = [
            k for k in values if ((i, k) in spans or k - i == 1) and ((k, j) in spans or j - k == 1)
        ]
        assert len(chosen) == 1
        total += values[chosen[0]] - sum(values.values()) / len(values)
    return total


def test_tree_score_hand_case():
    s = np.array([[0.0, 1.0, 0.5], [np.nan, 0.2, 0.3], [np.nan, np.nan, 0.7]])
    # root (0,3): split 1 -> s00 + s12 = 0.3; split 2 -> s01 + s22 = 1.7; greedy picks 2
    assert tree_projection(s) == ((0, 3), (0, 2))
    assert sentence_tree_score(s) == pytest.approx(1.7 - (0.3 + 1.7) / 2)
    # scoring a given (worse) tree gives a negative score
    assert sentence_tree_score(s, ((0, 3), (1, 3))) == pytest.approx(0.3 - 1.0)


def test_tree_score_matches_plain_reference():
    rng = np.random.default_rng(0)
    scores = [torch.tensor(rng.normal(size=(n, n))) for n in (1, 2, 3, 6, 9)]
    for method in ("greedy", "exact"):
        trees = [tree_projection(s, method) for s in scores]
        expected = np.mean([plain_tree_score(s.numpy(), t) for s, t in zip(scores, trees)])
        assert tree_score(scores, method=method) == pytest.approx(expected)
        assert tree_score(scores, trees) == pytest.approx(expected)
    # greedy picks the best split at every node, so each node's gain is >= 0
    assert tree_score(scores) >= 0
    assert tree_score([np.ones((5, 5))]) == pytest.approx(0.0)


def test_tree_score_errors():
    with pytest.raises(ValueError):
        tree_score([])
    with pytest.raises(ValueError, match="2 trees"):
        tree_score([np.ones((2, 2))], [((0, 2),), ((0, 2),)])
