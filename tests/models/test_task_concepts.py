"""Synthetic hierarchical concepts: geometry of the directions and firing statistics."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from hierlens.models.tasks.concepts import HierarchicalConcepts


def _ancestors(parent: list[int], i: int) -> list[int]:
    out = []
    while parent[i] >= 0:
        i = parent[i]
        out.append(i)
    return out


@pytest.mark.parametrize("cos", [0.0, 0.3, 0.7])
@pytest.mark.parametrize("n_children", [(4,), (3, 2)])
def test_geometry(cos, n_children):
    cfg = HierarchicalConcepts(
        n_top=5, n_children=n_children, n_with_children=3, dim=60, sibling_cosine=cos, seed=1
    )
    tree = cfg.tree()
    D = tree.directions.double()
    parent = tree.parent.tolist()
    n_sub = sum(int(np.prod(n_children[: i + 1])) for i in range(len(n_children)))
    assert tree.n_concepts == 5 + 3 * n_sub
    torch.testing.assert_close(D.norm(dim=1), torch.ones(tree.n_concepts, dtype=torch.float64))
    G = D @ D.T
    for i, j in itertools.combinations(range(tree.n_concepts), 2):
        if j in _ancestors(parent, i) or i in _ancestors(parent, j):
            expected = 0.0  # a concept is orthogonal to all its ancestors
        elif parent[i] == parent[j] and parent[i] >= 0:
            expected = cos  # siblings
        elif tree.family[i] != tree.family[j]:
            expected = 0.0  # distinct families are orthogonal without superposition
        else:
            continue  # cousins: not specified
        assert G[i, j].item() == pytest.approx(expected, abs=1e-10), (i, j)
    assert tree.level[:5].tolist() == [0] * 5 and parent[:5] == [-1] * 5
    assert all(tree.level[i] == tree.level[parent[i]] + 1 for i in range(5, tree.n_concepts))
    assert [len(tree.children(f)) for f in range(5)] == [n_children[0]] * 3 + [0, 0]


def test_superposition_allows_more_concepts_than_dimensions():
    cfg = HierarchicalConcepts(
        n_top=20, n_children=(5,), dim=16, sibling_cosine=0.4, superposition=True
    )
    tree = cfg.tree()
    assert tree.n_concepts == 120 > cfg.dim
    D = tree.directions.double()
    for p in range(20):
        kids = tree.children(p)
        assert (D[kids] @ D[p]).abs().max() < 1e-10
        G = D[kids] @ D[kids].T
        off = G[~torch.eye(5, dtype=torch.bool)]
        torch.testing.assert_close(off, torch.full_like(off, 0.4))
    with pytest.raises(ValueError, match="superposition"):
        HierarchicalConcepts(n_top=20, n_children=(5,), dim=16)


def test_firing_statistics():
    cfg = HierarchicalConcepts(
        n_top=4,
        n_children=(3, 2),
        n_with_children=2,
        dim=64,
        p_active=0.7,
        p_child=0.6,
        magnitude_low=0.5,
        magnitude_high=2.0,
        seed=3,
    )
    s = cfg.sample(40000, seed=0, dtype=torch.float64)
    tree, act = s.tree, s.active
    parent = tree.parent
    top = act[:, :4]
    assert top.sum(1).max() <= 1  # at most one top-level concept per sample
    assert top.any(1).double().mean().item() == pytest.approx(0.7, abs=0.01)
    # each active concept has its parent active, and at most one active child
    for i in range(4, tree.n_concepts):
        assert act[act[:, i], parent[i]].all()
    for i in range(tree.n_concepts):
        kids = tree.children(i)
        if kids:
            n_on = act[:, kids].sum(1)
            assert n_on.max() <= 1
            assert (n_on[~act[:, i]] == 0).all()
            frac = (n_on[act[:, i]] == 1).double().mean().item()
            assert frac == pytest.approx(0.6, abs=0.03), i
            # children uniformly chosen
            counts = act[act[:, i]][:, kids].sum(0).double()
            assert (counts / counts.sum() - 1 / len(kids)).abs().max() < 0.04
    mags = s.codes[act]
    assert mags.min() >= 0.5 and mags.max() <= 2.0
    assert mags.mean().item() == pytest.approx(1.25, abs=0.02)
    torch.testing.assert_close(s.x, s.codes @ tree.directions)


def test_noise_and_determinism():
    cfg = HierarchicalConcepts(noise_std=0.1, dim=64)
    a, b = cfg.sample(2000, seed=5), cfg.sample(2000, seed=5)
    torch.testing.assert_close(a.x, b.x)
    resid = (a.x - a.codes @ a.tree.directions).double()
    assert resid.std().item() == pytest.approx(0.1, rel=0.03)
    assert HierarchicalConcepts.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    "params,name",
    [
        ({"n_top": 0}, "n_top"),
        ({"n_children": (0,)}, "n_children"),
        ({"n_with_children": 9}, "n_with_children"),
        ({"dim": 0}, "dim"),
        ({"dim": 10}, "dim"),
        ({"sibling_cosine": 1.0}, "sibling_cosine"),
        ({"sibling_cosine": -0.1}, "sibling_cosine"),
        ({"p_active": 1.5}, "p_active"),
        ({"p_child": -0.1}, "p_child"),
        ({"magnitude_low": 0.0}, "magnitude_low"),
        ({"noise_std": -1.0}, "noise_std"),
    ],
)
def test_bad_parameters(params, name):
    with pytest.raises(ValueError, match=name):
        HierarchicalConcepts(**params)


def test_bad_n():
    with pytest.raises(ValueError, match="n must be"):
        HierarchicalConcepts().sample(0)
