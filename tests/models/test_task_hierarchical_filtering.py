"""Hierarchical filtering task and exact belief propagation, against brute-force enumeration."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from sklearn.metrics import mutual_info_score

from hierlens.models import get_task, list_tasks
from hierlens.models.tasks import IGNORE_INDEX
from hierlens.models.tasks.belief_propagation import belief_propagation
from hierlens.models.tasks.hierarchical_filtering import (
    HierarchicalFilteringTask,
    leaf_pair_mutual_information,
)

# ----------------------------------------------------------------------------- slow reference


def _brute_link(M: np.ndarray, d: int) -> np.ndarray:
    """P(node_i at depth d = b | root = a) by enumerating every full tree of depth d."""
    q = M.shape[0]
    n_nodes = 2 ** (d + 1) - 1  # heap indices 1..n_nodes
    out = np.zeros((2**d, q, q))
    for a in range(q):
        for rest in itertools.product(range(q), repeat=n_nodes - 1):
            x = (None, a, *rest)
            p = 1.0
            for node in range(1, 2**d):
                p *= M[x[node], x[2 * node], x[2 * node + 1]]
            for i in range(2**d):
                out[i, a, x[2**d + i]] += p
    return out


def _brute_table(M: np.ndarray, L: int, k: int):
    """Every configuration of the filtered model with its probability.

    Returns (configs, prob, index): configs (C, V) int array; index maps ("root",), ("node",
    h, i) (hidden node at height h, position i, h = 1..k) and ("leaf", i) to columns.
    """
    q = M.shape[0]
    links = _brute_link(M, L - k)
    n_top = 2 ** (L - k)
    names = [("root",)]
    for h in range(k, 0, -1):
        names += [("node", h, i) for i in range(2 ** (L - h))]
    names += [("leaf", i) for i in range(2**L)]
    index = {nm: c for c, nm in enumerate(names)}
    configs = np.array(list(itertools.product(range(q), repeat=len(names))), dtype=np.int64)
    r = configs[:, 0]

    def col(h: int, i: int) -> np.ndarray:
        return configs[:, index[("leaf", i)] if h == 0 else index[("node", h, i)]]

    prob = np.full(len(configs), 1.0 / q)
    for i in range(n_top):
        prob = prob * links[i, r, col(k, i)]
    for h in range(k, 0, -1):
        for i in range(2 ** (L - h)):
            prob = prob * M[col(h, i), col(h - 1, 2 * i), col(h - 1, 2 * i + 1)]
    keep = prob > 0
    return configs[keep], prob[keep], index


def _brute_posteriors(table, leaves: np.ndarray, masked: np.ndarray, q: int, L: int, k: int):
    configs, prob, index = table
    ok = np.ones(len(configs), dtype=bool)
    for i in range(2**L):
        if not masked[i]:
            ok &= configs[:, index[("leaf", i)]] == leaves[i]
    p, c = prob[ok], configs[ok]
    Z = p.sum()

    def marg(column: int) -> np.ndarray:
        return np.bincount(c[:, column], weights=p, minlength=q) / Z

    root = marg(0)
    leaf = np.stack([marg(index[("leaf", i)]) for i in range(2**L)])
    nodes = [
        np.stack([marg(index[("node", h, i)]) for i in range(2 ** (L - h))])
        for h in range(1, k + 1)
        if h < L
    ]
    return root, leaf, nodes


# ----------------------------------------------------------------------------- BP vs brute force


@pytest.mark.parametrize(
    "q,L,k,disjoint,n_rules",
    [
        (2, 3, 3, False, 3),
        (2, 3, 2, False, 2),
        (2, 3, 1, True, 2),
        (2, 3, 0, False, 3),
        (3, 2, 2, False, 4),
        (3, 2, 1, True, 2),
        (3, 2, 0, False, 5),
        (4, 2, 2, False, 3),
        (2, 1, 1, False, 3),
    ],
)
def test_bp_matches_brute_force(q, L, k, disjoint, n_rules):
    task = HierarchicalFilteringTask(
        q=q,
        depth=L,
        filter_level=k,
        n_rules=n_rules,
        disjoint=disjoint,
        rule_weights="random",
        grammar_seed=3,
    )
    M = np.array(task.grammar)
    table = _brute_table(M, L, k)
    rng = np.random.default_rng(0)
    draw = task.generate(12, rng)
    leaves = draw["leaves"]
    N = 2**L
    masks = rng.random((12, N)) < 0.4
    masks[0] = True  # nothing observed: root posterior = prior
    masks[1] = False  # everything observed
    ev = np.where(masks[..., None], 1.0, np.eye(q)[leaves])
    res = belief_propagation(torch.from_numpy(ev), torch.from_numpy(M), torch.full((q,), 1 / q), k)
    assert res.root.dtype == torch.float64
    assert len(res.nodes) == (k if k < L else L - 1)
    for b in range(12):
        root, leaf, nodes = _brute_posteriors(table, leaves[b], masks[b], q, L, k)
        np.testing.assert_allclose(res.root[b].numpy(), root, atol=1e-9, rtol=0)
        np.testing.assert_allclose(res.leaves[b].numpy(), leaf, atol=1e-9, rtol=0)
        for got, want in zip(res.nodes, nodes):
            np.testing.assert_allclose(got[b].numpy(), want, atol=1e-9, rtol=0)
    np.testing.assert_allclose(res.root[0].numpy(), np.full(q, 1 / q), atol=1e-12)


def test_bp_handles_deep_trees_without_underflow():
    task = HierarchicalFilteringTask(q=4, depth=9, filter_level=0, n_rules=3, disjoint=False)
    ex = task.sample(4, "train", seed=1)
    post = task.posteriors(torch.tensor([e.tokens for e in ex]))
    assert torch.isfinite(post.root).all()
    torch.testing.assert_close(post.root.sum(-1), torch.ones(4, dtype=torch.float64))


def test_bp_rejects_bad_inputs():
    M = torch.full((2, 2, 2), 0.25, dtype=torch.float64)
    prior = torch.full((2,), 0.5, dtype=torch.float64)
    with pytest.raises(ValueError, match="power of two"):
        belief_propagation(torch.ones(1, 3, 2), M, prior)
    with pytest.raises(ValueError, match="filter_level"):
        belief_propagation(torch.ones(1, 4, 2), M, prior, 3)
    with pytest.raises(ValueError, match="grammar"):
        belief_propagation(torch.ones(1, 4, 2), torch.ones(2, 2), prior)


# ----------------------------------------------------------------------------- filtering range


def _lca_height(i: int, j: int) -> int:
    return (i ^ j).bit_length()


def _path(M: np.ndarray, bits) -> np.ndarray:
    """P(descendant | ancestor) along a path of left (0) / right (1) steps, by a plain loop."""
    q = M.shape[0]
    out = np.eye(q)
    for b in bits:
        step = np.zeros((q, q))
        for a in range(q):
            for x in range(q):
                for y in range(q):
                    step[a, x if b == 0 else y] += M[a, x, y]
        out = out @ step
    return out


def _exact_pair_cmi(M: np.ndarray, L: int, i: int, j: int) -> float:
    """I(x_i; x_j | root) in the unfiltered model (uniform root)."""
    q = M.shape[0]
    bi = [(i >> (L - 1 - t)) & 1 for t in range(L)]
    bj = [(j >> (L - 1 - t)) & 1 for t in range(L)]
    h = _lca_height(i, j)
    to_lca = _path(M, bi[: L - h])
    joint = np.einsum(
        "rz,zlm,li,mj->rij",
        to_lca / q,
        M,
        _path(M, bi[L - h + 1 :]),
        _path(M, bj[L - h + 1 :]),
    )
    pr = joint.sum((1, 2), keepdims=True)
    pi = joint.sum(2, keepdims=True)
    pj = joint.sum(1, keepdims=True)
    nz = joint > 0
    return float((joint[nz] * np.log((joint * pr)[nz] / (pi * pj)[nz])).sum())


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_filter_level_sets_the_correlation_range(k):
    """Conditional MI given the root, measured on samples: leaves whose lowest common
    ancestor is at height h <= k keep the unfiltered model's correlation (exact value by path
    products), pairs with h > k are independent given the root."""
    q, L = 4, 3
    task = HierarchicalFilteringTask(
        q=q, depth=L, filter_level=k, n_rules=2, rule_weights="random", grammar_seed=0
    )
    M = np.array(task.grammar)
    draw = task.generate(40000, np.random.default_rng(k))
    measured = leaf_pair_mutual_information(draw["leaves"], q, given=draw["root"])
    for i in range(2**L):
        for j in range(i + 1, 2**L):
            if _lca_height(i, j) > k:
                assert measured[i, j] < 3e-3, (i, j)
            else:
                exact = _exact_pair_cmi(M, L, i, j)
                assert exact > 0.015
                assert abs(measured[i, j] - exact) < 0.1 * exact + 3e-3, (i, j, exact)


def test_mutual_information_matches_sklearn():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, size=(500, 4))
    x[:, 1] = (x[:, 0] + (rng.random(500) < 0.2)) % 3
    mi = leaf_pair_mutual_information(x, 3)
    for i, j in [(0, 1), (0, 2), (2, 3)]:
        assert mi[i, j] == pytest.approx(mutual_info_score(x[:, i], x[:, j]), abs=1e-12)
    assert mi[0, 1] > 0.5


# ----------------------------------------------------------------------------- task protocol


def test_registered_and_examples_are_consistent():
    assert "hierarchical_filtering" in list_tasks()
    task = get_task("hierarchical_filtering", q=4, depth=3, filter_level=2)
    assert task.vocab[:3] == ("<pad>", "<bos>", "<eos>")
    assert task.objective == "masked"
    ex = task.sample(20, "train", seed=0)
    assert ex == task.sample(20, "train", seed=0)
    for e in ex:
        assert len(e.tokens) == task.max_len == 10
        assert e.targets[0] == e.labels["root"] + task.symbol_offset
        assert all(t == IGNORE_INDEX for t in e.targets[1:])
        # ancestors at height 3 (root) and 2 (top nodes); height 1 exists, none above k
        assert e.token_labels["ancestor_h3"][1:-1] == (e.labels["root"],) * 8
        assert e.tree[0] == (0, 8) and (0, 4) in e.tree and (0, 2) in e.tree
        assert e.token_labels["depth"][1:-1] == (3,) * 8
    # test_id is disjoint from train as sequences
    tr = {e.tokens for e in task.sample(300, "train", seed=1)}
    te = {e.tokens for e in task.sample(100, "test_id", seed=1)}
    assert not tr & te


def test_masked_subtask_and_bp_accuracy():
    task = HierarchicalFilteringTask(
        q=4, depth=3, subtask="mask", n_masked=2, disjoint=False, n_rules=4
    )
    ex = task.sample(200, "test_id", seed=0)
    for e in ex:
        masked = [t for t in range(len(e.tokens)) if e.targets[t] != IGNORE_INDEX]
        assert len(masked) == 2
        assert all(e.tokens[t] == task.mask_id for t in masked)
        assert all(e.targets[t] - task.symbol_offset == e.token_labels["symbol"][t] for t in masked)
    acc = task.bp_accuracy(examples=ex)
    # the oracle model with BP posteriors as logits scores exactly bp_accuracy
    post = task.posteriors(torch.tensor([e.tokens for e in ex]))
    batch_logits = torch.full((len(ex), task.max_len, len(task.vocab)), -1e9)
    batch_logits[:, 1:-1, task.symbol_offset :] = post.leaves.float().log().clamp(min=-1e8)
    from hierlens.models.tasks import pad_examples

    batch = pad_examples(ex, task.pad_id)
    num, den = task.metric_counts(batch, batch_logits)["leaf_acc"]
    assert float(num / den) == pytest.approx(acc)
    assert 1 / task.q < acc < 1.0


def test_bp_root_accuracy_is_perfect_for_unambiguous_unfiltered_grammar():
    task = HierarchicalFilteringTask(q=4, depth=3, n_rules=2, disjoint=True)
    assert task.bp_accuracy("test_id", n=200) == 1.0
    filtered = task.replace(filter_level=0)
    assert filtered.bp_accuracy("test_id", n=200) < 1.0
    # test_ood is drawn unfiltered by default
    assert all(e.labels["filter_level"] == 3 for e in filtered.sample(5, "test_ood"))


@pytest.mark.parametrize(
    "params,name",
    [
        ({"q": 1}, "q"),
        ({"depth": 0}, "depth"),
        ({"filter_level": 5, "depth": 4}, "filter_level"),
        ({"filter_level": -2}, "filter_level"),
        ({"ood_filter_level": 9}, "ood_filter_level"),
        ({"n_rules": 0}, "n_rules"),
        ({"n_rules": 5, "q": 4}, "n_rules"),
        ({"subtask": "roots"}, "subtask"),
        ({"n_masked": 0}, "n_masked"),
        ({"rule_weights": "zipf"}, "rule_weights"),
    ],
)
def test_bad_parameters(params, name):
    with pytest.raises(ValueError, match=name):
        HierarchicalFilteringTask(**params)


def test_bad_n():
    with pytest.raises(ValueError, match="n must be"):
        HierarchicalFilteringTask().sample(0)


def test_evaluate_with_a_bidirectional_transformer():
    from hierlens.models import ModelConfig, build_transformer

    task = HierarchicalFilteringTask(q=3, depth=3, filter_level=1)
    cfg = ModelConfig.for_task(
        task, d_model=16, n_layers=1, n_heads=2, attention_dir="bidirectional"
    )
    res = task.evaluate(build_transformer(cfg, device="cpu"), "test_id", n=16, device="cpu")
    assert 0.0 <= res["root_acc"] <= 1.0 and res["n"] == 16
