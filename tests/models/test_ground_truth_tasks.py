"""Ground-truth feature activations of the tasks with known latents: each checked against an
independent derivation from the example itself, the hierarchy (a child is true only under a
parent), alignment with activation-store rows, and bad inputs."""

from __future__ import annotations

import nltk
import numpy as np
import pytest
import torch

from hierlens.models import get_task
from hierlens.models.capture import capture
from hierlens.models.tasks.concepts import HierarchicalConcepts
from hierlens.models.tasks.ground_truth import (
    FeatureGraph,
    GroundTruth,
    constituent_ground_truth,
    ground_truth,
    store_rows,
)
from hierlens.models.transformer import ModelConfig, build_transformer


def _rows(examples):
    return [(e, p) for e, ex in enumerate(examples) for p in range(len(ex.tokens))]


@pytest.mark.parametrize("filter_level", [-1, 1])
def test_hierarchical_filtering_ancestor_values(filter_level):
    task = get_task("hierarchical_filtering", q=3, depth=3, filter_level=filter_level)
    examples = task.sample(12, seed=1)
    truth = ground_truth(task, examples)
    truth.check_hierarchy()
    names = truth.features.names
    k = task.k
    heights = sorted(set(range(k + 1)) | {task.depth}, reverse=True)
    assert len(names) == 3 * len(heights)
    # regenerate the tree of each example from the grammar-free description: the leaves are
    # the tokens; the root is the example's label; every leaf token has one value per height
    for r, (e, p) in enumerate(_rows(examples)):
        ex = examples[e]
        on = [names[i] for i in truth.active[r].nonzero().flatten().tolist()]
        if p in (0, len(ex.tokens) - 1):
            assert on == []
            continue
        assert len(on) == len(heights)
        assert f"h{task.depth}=s{ex.labels['root']}" in on
        assert f"h0=s{ex.tokens[p] - task.symbol_offset}" in on
    # the edges follow the grammar: a parent value reaches its child values
    M = task.grammar
    for p, c in truth.features.edges:
        hp, sp = (int(v[1:]) for v in names[p].split("="))
        hc, sc = (int(v[1:]) for v in names[c].split("="))
        if hp == hc + 1:
            assert M[sp, sc, :].sum() + M[sp, :, sc].sum() > 0


def test_dyck_depth_and_stack_top_from_a_plain_stack():
    task = get_task("dyck", n_types=2, max_depth=4, max_length=20)
    examples = task.sample(20, seed=2)
    truth = ground_truth(task, examples)
    truth.check_hierarchy()
    names = truth.features.names
    r = 0
    for ex in examples:
        stack: list[str] = []
        for p, tok in enumerate(ex.tokens):
            s = task.vocab[tok]
            if s in "([":
                stack.append(s)
            elif s in ")]":
                stack.pop()
            want = {f"depth={len(stack)}"}
            if stack:
                want |= {f"top={stack[-1]}", f"depth={len(stack)},top={stack[-1]}"}
            got = {names[i] for i in truth.active[r].nonzero().flatten().tolist()}
            assert got == want, (p, ex.tokens)
            r += 1
    assert r == truth.n_rows


def test_grammar_constituent_paths():
    task = get_task("question_formation")
    examples = task.sample(15, seed=3)
    truth = ground_truth(task, examples)
    truth.check_hierarchy()
    names = truth.features.names
    for (e, p), row in zip(_rows(examples), truth.active):
        ex = examples[e]
        got = {names[i] for i in row.nonzero().flatten().tolist()}
        if p not in ex.word_positions:
            assert got == set()
            continue
        tree = nltk.Tree.fromstring(ex.labels["tree"])
        leaf = tree.treepositions("leaves")[ex.word_positions.index(p)]
        labels = [tree[leaf[:i]].label() for i in range(len(leaf))]
        assert got == {">".join(labels[: i + 1]) for i in range(len(labels))}
    for p, c in truth.features.edges:
        assert names[c].rsplit(">", 1)[0] == names[p]

    # a recursive tree gives distinct features per path
    class Ex:
        tokens = (0, 1, 2, 3, 4)
        word_positions = (1, 2, 3)

    t = constituent_ground_truth([Ex()], ["(S (NP (NP (N a)) (PP (P b))) (V c))"])
    assert "S>NP>NP>N" in t.features.names and "S>NP>PP>P" in t.features.names


def test_concepts_ground_truth_is_the_codes():
    gen = HierarchicalConcepts(n_top=3, n_children=(2,), dim=12)
    sample = gen.sample(50)
    truth = ground_truth(gen, sample)
    assert torch.equal(truth.activations, sample.codes)
    assert truth.features.edges == tuple(
        (int(p), c) for c, p in enumerate(sample.tree.parent.tolist()) if p >= 0
    )
    truth.check_hierarchy()


def test_store_rows_align_with_a_capture_of_some_positions():
    task = get_task("dyck", n_types=2, max_depth=4, max_length=12)
    examples = task.sample(6, seed=4)
    model = build_transformer(
        ModelConfig.for_task(task, d_model=16, n_layers=1, n_heads=2), device="cpu"
    )
    store = capture(
        model,
        examples,
        "blocks.0.hook_resid_post",
        batch_size=4,
        positions=lambda seq: torch.arange(len(seq)) % 2 == 1,
        progress=False,
    )
    truth = ground_truth(task, examples)
    rows = store_rows(
        [len(e.tokens) for e in examples], store.index["sequence"], store.index["position"]
    )
    sub = truth.select(rows)
    assert sub.n_rows == store.n_tokens
    depth = np.asarray(store.labels["depth"])  # the gold-tree depth label travels with the rows
    assert len(depth) == sub.n_rows
    flat_tokens = torch.tensor([t for e in examples for t in e.tokens])
    assert torch.equal(flat_tokens[rows], store.index["token"])
    with pytest.raises(ValueError, match="not captured from"):
        store_rows(
            [len(e.tokens) for e in examples[:2]], store.index["sequence"], store.index["position"]
        )


def test_bad_inputs():
    with pytest.raises(ValueError, match="no known latents"):
        ground_truth(get_task("parity_check"), [])
    with pytest.raises(ValueError, match="columns"):
        GroundTruth(torch.zeros(3, 2), FeatureGraph(("a",), (0,)))
    with pytest.raises(ValueError, match="level"):
        FeatureGraph(("a", "b"), (1, 0), ((0, 1),))
    task = get_task("hierarchical_filtering", q=3, depth=3, ood_filter_level=1)
    mixed = task.sample(2, "train") + task.sample(2, "test_ood")
    with pytest.raises(ValueError, match="filtering levels"):
        ground_truth(task, mixed)
    bad = GroundTruth(torch.tensor([[0.0, 1.0]]), FeatureGraph(("a", "b"), (0, 1), ((0, 1),)))
    with pytest.raises(ValueError, match="without any of its parents"):
        bad.check_hierarchy()
