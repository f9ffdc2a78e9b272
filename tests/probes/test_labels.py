"""Per-token labels from task examples, their alignment with activations, span pooling."""

import numpy as np
import pytest
import torch

from hierlens.models import get_task
from hierlens.models.tasks.base import pad_examples
from hierlens.probes import aggregate_spans, flatten_activations, token_labels, tree_token_labels


def test_dyck_token_labels_concatenate_in_token_order():
    task = get_task("dyck")
    examples = task.sample(5, "train", seed=1)
    labels = token_labels(examples, example_labels=True)
    assert {"depth", "nesting", "bracket_type", "is_close"} <= set(labels)
    n = sum(len(e.tokens) for e in examples)
    row = 0
    for e in examples:
        for t in range(len(e.tokens)):
            for name in ("depth", "nesting", "bracket_type", "is_close"):
                assert labels[name][row] == e.token_labels[name][t]
            assert labels["max_nesting"][row] == e.labels["max_nesting"]
            assert labels["novel_segment"][row] == int(e.labels["novel_segment"])
            row += 1
    assert row == n and all(v.shape == (n,) for v in labels.values())
    assert set(token_labels(examples, ["is_close"])) == {"is_close"}


def test_labels_align_with_flattened_padded_activations():
    task = get_task("dyck")
    examples = task.sample(6, "train", seed=2)
    batch = pad_examples(examples, task.pad_id)
    # Fake activations that carry each position's token id and its example's row.
    B, T = batch.tokens.shape
    acts = torch.stack(
        [batch.tokens.float(), torch.arange(B)[:, None].expand(B, T).float()], dim=-1
    )
    flat = flatten_activations(acts, batch.attention_mask)
    want_tokens = np.concatenate([e.tokens for e in examples])
    np.testing.assert_array_equal(flat[:, 0].numpy(), want_tokens)
    labels = token_labels(examples)
    # is_close is 1 exactly at closing brackets.
    closing = np.isin(want_tokens, task.close_ids)
    np.testing.assert_array_equal(labels["is_close"] == 1, closing)


def test_tree_labels_by_hand():
    task = get_task("dyck")
    ex = task.make_example(task.encode(list("(())()")))
    tl = tree_token_labels(ex)
    np.testing.assert_array_equal(tl["opens"], [-1, 2, 1, 0, 0, 1, 0, -1])
    np.testing.assert_array_equal(tl["closes"], [-1, 0, 0, 1, 1, 0, 2, -1])
    both = token_labels([ex, ex], ["depth"], tree_labels=True)
    np.testing.assert_array_equal(both["opens"], np.tile(tl["opens"], 2))


def test_label_errors():
    task = get_task("dyck")
    with pytest.raises(ValueError, match="at least one example"):
        token_labels([])
    with pytest.raises(ValueError, match="not given for every example"):
        token_labels(task.sample(2, "train", 0), ["relative_clause"])
    with pytest.raises(ValueError, match="attention_mask"):
        flatten_activations(torch.zeros(2, 3, 4), torch.ones(2, 4, dtype=torch.bool))


@pytest.mark.parametrize("how", ["mean", "max"])
def test_aggregate_spans_matches_loop(how):
    rng = np.random.default_rng(0)
    acts = torch.tensor(rng.normal(size=(3, 9, 4)))
    spans = [(0, 0, 9), (1, 2, 5), (1, 3, 4), (2, 8, 9), (0, 1, 3)]
    got = aggregate_spans(acts, spans, how)
    for s, (b, i, j) in enumerate(spans):
        seg = acts[b, i:j]
        want = seg.mean(0) if how == "mean" else seg.amax(0)
        torch.testing.assert_close(got[s], want)
    with pytest.raises(ValueError, match="0 <= i < j"):
        aggregate_spans(acts, [(0, 4, 4)], how)
    with pytest.raises(ValueError, match="how"):
        aggregate_spans(acts, spans, "sum")
