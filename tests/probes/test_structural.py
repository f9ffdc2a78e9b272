"""Structural probes (Hewitt & Manning 2019): planted tree metrics, stacked vs single fits,
metrics against hand-computed values, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hierlens.probes import (
    StructuralProbe,
    distance_spearman,
    fit_structural,
    norm_spearman,
    predict_structural,
    root_accuracy,
    uuas,
)
from tests.tree_paths import bfs_distances, head_adjacency


def _random_tree(n: int, rng) -> list[int]:
    return [-1] + [int(rng.integers(0, i)) for i in range(1, n)]


def _bfs_distances(heads: list[int]) -> np.ndarray:
    return bfs_distances(head_adjacency(heads), len(heads))


def _planted(n_sent: int, d: int, seed: int):
    """Word vectors whose squared distances under a known B are tree path lengths: node i
    is the sum of unit orthogonal edge vectors on its root path, then mixed by A."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(d, d)) + 3 * np.eye(d)
    B_true = np.linalg.inv(A).T  # (v A) B_true^T = v
    H, gold, heads = [], [], []
    for _ in range(n_sent):
        n = int(rng.integers(5, d + 1))
        h = _random_tree(n, rng)
        V = np.zeros((n, d))
        for i in range(n):
            j = i
            while h[j] != -1:
                V[i, j] = 1.0  # edge (j, head j) has axis j
                j = h[j]
        H.append((V @ A).astype(np.float32))
        gold.append(_bfs_distances(h))
        heads.append(h)
    return H, gold, heads, B_true.astype(np.float32)


def test_planted_metric_is_exact_under_true_map():
    H, gold, _, B_true = _planted(12, 10, seed=0)
    pred = predict_structural(torch.from_numpy(B_true)[None], [H], "distance")[0]
    for p, g in zip(pred, gold):
        np.testing.assert_allclose(p, g, atol=1e-3)
    assert uuas(pred, gold) == 1.0
    # tree distances tie a lot: float noise would break ties, so compare rounded predictions
    assert distance_spearman([np.round(p, 3) for p in pred], gold) == pytest.approx(1.0)


def test_probe_recovers_planted_tree():
    H, gold, _, _ = _planted(40, 8, seed=1)
    probe = StructuralProbe("distance", rank=8, lr=3e-2, max_epochs=300, patience=40, seed=0)
    probe.fit(H[:30], gold[:30])
    assert probe.B_.shape == (8, 8)
    m = probe.evaluate(H[30:], gold[30:])
    assert m["uuas"] == 1.0
    assert m["spearman"] > 0.9  # below 1 only through broken ties


def test_depth_probe_recovers_planted_depths():
    H, _, heads, _ = _planted(40, 8, seed=2)
    depths = [_bfs_distances(h)[0] for h in heads]  # distance to the root word 0
    probe = StructuralProbe("depth", rank=8, lr=3e-2, max_epochs=300, patience=40, seed=0)
    probe.fit(H[:30], depths[:30])
    m = probe.evaluate(H[30:], depths[30:])
    assert m["root_acc"] == 1.0
    assert m["norm_spearman"] > 0.9


@pytest.mark.parametrize("kind", ["distance", "depth"])
def test_stacked_fit_equals_single_layer_fits(kind):
    rng = np.random.default_rng(3)
    lengths = rng.integers(3, 9, size=14)
    layers = [[rng.normal(size=(n, 6)).astype(np.float32) for n in lengths] for _ in range(3)]
    targets = [
        _bfs_distances(_random_tree(n, rng)) if kind == "distance" else rng.integers(0, 4, n)
        for n in lengths
    ]
    kw = dict(kind=kind, rank=4, lr=1e-2, max_epochs=15, patience=2, batch_size=4, seed=7)
    tr, dv = slice(0, 10), slice(10, 14)
    B, loss = fit_structural(
        [h[tr] for h in layers], targets[tr], [h[dv] for h in layers], targets[dv], **kw
    )
    for li, h in enumerate(layers):
        B1, loss1 = fit_structural([h[tr]], targets[tr], [h[dv]], targets[dv], **kw)
        torch.testing.assert_close(B[li], B1[0], atol=1e-5, rtol=1e-5)
        assert loss[li] == pytest.approx(loss1[0], rel=1e-5)


def test_uuas_hand_computed():
    gold = np.array([[0, 1, 2], [1, 0, 1], [2, 1, 0]])  # path 0-1-2
    pred = np.array([[0, 5, 1], [5, 0, 2], [1, 2, 0]], dtype=float)  # MST {0-2, 1-2}
    assert uuas([pred], [gold]) == 0.5  # edge 1-2 right, 0-2 wrong
    # punctuation excluded: word 2 masked, the only gold edge is 0-1
    assert uuas([pred], [gold], punct=[np.array([False, False, True])]) == 1.0
    # corpus level: (1 + 2) / (2 + 2)
    assert uuas([pred, gold.astype(float)], [gold, gold]) == 0.75


def test_spearman_and_root_accuracy_hand_computed():
    gold = np.array([0, 1, 2, 1, 2])  # length 5: counted
    pred_perfect = 2.0 * gold + 0.1  # same ranks, ties included
    assert norm_spearman([pred_perfect], [gold]) == pytest.approx(1.0)
    reverse = -gold.astype(float) + 0.01 * np.arange(5)
    # Spearman of ranks: gold ranks (1, 2.5, 4.5, 2.5, 4.5), reversed pred ranks 5..1
    from scipy.stats import spearmanr

    assert norm_spearman([reverse], [gold]) == pytest.approx(spearmanr(reverse, gold).statistic)
    assert norm_spearman([gold[:3].astype(float)], [gold[:3]]) != norm_spearman(
        [gold[:3].astype(float)], [gold[:3]]
    )  # no sentence of length 5..50: NaN
    assert root_accuracy([pred_perfect, np.array([2.0, 0.0, 3, 3, 3])], [gold, gold]) == 0.5
    # punctuation excluded: the predicted root (word 1) is punctuation, so word 0 is chosen
    punct = [np.array([False, True, False, False, False])]
    assert root_accuracy([np.array([1.0, 0.0, 3, 3, 3])], [gold], punct) == 1.0
    d = np.abs(np.subtract.outer(np.arange(5), np.arange(5)))  # a path: row i vs itself
    assert distance_spearman([d.astype(float) * 2], [d]) == pytest.approx(1.0)


def test_bad_input():
    g = np.array([[0, 1], [1, 0]])
    with pytest.raises(ValueError, match="predicted"):
        uuas([g, g], [g])
    with pytest.raises(ValueError, match="fewer than 2"):
        uuas([np.zeros((1, 1))], [np.zeros((1, 1))])
    with pytest.raises(ValueError, match="NaN"):
        uuas([np.full((2, 2), np.nan)], [g])
    with pytest.raises(ValueError, match="NaN"):
        StructuralProbe().fit([np.full((2, 3), np.nan)] * 3, [g] * 3)
    with pytest.raises(ValueError, match="target has shape"):
        StructuralProbe().fit([np.zeros((2, 3))] * 3, [np.zeros((3, 3))] * 3)
    with pytest.raises(ValueError, match="targets"):
        StructuralProbe().fit([np.zeros((2, 3))] * 3, [g] * 2)
    with pytest.raises(ValueError, match="kind"):
        StructuralProbe(kind="parse").fit([np.zeros((2, 3))] * 3, [g] * 3)
    with pytest.raises(RuntimeError, match="not fitted"):
        StructuralProbe().predict([np.zeros((2, 3))])


def test_sweep_refuses_constituency_only_gold_trees():
    """UUAS over a spanning tree of constituency distances is another metric (ties broken
    by word order): the sweep wants dependency trees and says where to get them."""
    import dataclasses

    from hierlens.models import shipped_treebank
    from hierlens.probes import structural_probe_sweep

    sentences = shipped_treebank("ptb")[:6]
    assert all(s.heads is not None for s in sentences)  # read_ptb converts by head rules
    spans_only = [dataclasses.replace(s, heads=None, deprels=None) for s in sentences]
    vectors = {0: [np.zeros((len(s), 4), dtype=np.float32) for s in sentences]}
    with pytest.raises(ValueError, match="dependency trees.*read_ptb"):
        structural_probe_sweep(vectors, spans_only)
