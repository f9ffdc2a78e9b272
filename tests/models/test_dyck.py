from collections import Counter

import numpy as np
import pytest
import torch

from hierlens.models import get_task
from hierlens.models.tasks import DyckTask, pad_examples


def _walk_transitions(task, strings):
    """Count automaton actions by state from generated strings, skipping each string's first
    action (conditioned on by the non-empty-string rejection)."""
    counts = {s: Counter() for s in ("empty", "mid", "max")}
    opens = set(task.open_ids.tolist())
    types_open = Counter()
    for s in strings:
        depth = 0
        for i, tok in enumerate([*s.tolist(), None]):
            state = "empty" if depth == 0 else ("max" if depth == task.max_depth else "mid")
            action = "end" if tok is None else ("open" if tok in opens else "close")
            if i > 0:
                counts[state][action] += 1
            if tok is None:
                break
            if tok in opens:
                types_open[tok] += 1
            depth += 1 if tok in opens else -1
    return counts, types_open


def test_generator_matches_automaton_probabilities():
    task = DyckTask(n_types=3, max_depth=3, min_length=2, max_length=400)
    strings = task.generate(6000, np.random.default_rng(0))
    counts, types_open = _walk_transitions(task, strings)

    def frac(state, action):
        c = counts[state]
        n = sum(c.values())
        return c[action] / n, n

    for state, action, p in [("empty", "end", 0.5), ("mid", "open", 0.5)]:
        f, n = frac(state, action)
        assert abs(f - p) < 4 * np.sqrt(p * (1 - p) / n), (state, action, f, n)
    assert counts["max"]["close"] > 0 and counts["max"]["open"] == 0 and counts["max"]["end"] == 0
    assert counts["empty"]["close"] == 0
    total = sum(types_open.values())
    for tok in task.open_ids:
        assert abs(types_open[tok] / total - 1 / 3) < 4 * np.sqrt(2 / 9 / total)


def test_strings_are_well_nested_and_respect_bounds():
    task = DyckTask(n_types=2, max_depth=4, min_length=6, max_length=20)
    for split in ("train", "test_id", "test_ood"):
        for ex in task.sample(300, split, seed=1):
            words = [task.vocab[t] for t in ex.tokens[1:-1]]
            assert 6 <= len(words) <= 20
            stack = []
            for w in words:
                if w in "([":
                    stack.append(w)
                else:
                    assert stack and "([".index(stack.pop()) == ")]".index(w)
                assert len(stack) <= 4
            assert not stack


def test_splits_disjoint_and_ood_has_unseen_segment():
    task = DyckTask(n_types=2, max_depth=5, min_length=4, max_length=24)
    train = task.sample(2000, "train", seed=0)
    test_id = task.sample(500, "test_id", seed=0)
    ood = task.sample(300, "test_ood", seed=0)
    train_strings = {ex.tokens for ex in train}
    assert not train_strings & {ex.tokens for ex in test_id}
    train_segments = set()
    for ex in train:
        b = np.array(ex.tokens[1:-1])
        train_segments |= {tuple(b[a:z]) for a, z in task.segments(b)}
    for ex in ood:
        b = np.array(ex.tokens[1:-1])
        segs = [tuple(b[a:z]) for a, z in task.segments(b)]
        assert ex.labels["novel_segment"]
        assert any(s not in train_segments and task.is_held_out_segment(np.array(s)) for s in segs)
    assert not any(ex.labels["novel_segment"] for ex in train + test_id)


def test_depth_ood_is_deeper_than_training():
    task = DyckTask(max_depth=3, ood="depth", ood_max_depth=5, max_length=20)
    assert all(ex.labels["max_nesting"] <= 3 for ex in task.sample(200, "train"))
    assert all(ex.labels["max_nesting"] > 3 for ex in task.sample(100, "test_ood"))


def test_sampling_is_deterministic():
    task = DyckTask()
    assert [e.tokens for e in task.sample(50, "train", 7)] == [
        e.tokens for e in task.sample(50, "train", 7)
    ]
    assert [e.tokens for e in task.sample(50, "train", 7)] != [
        e.tokens for e in task.sample(50, "train", 8)
    ]


def test_gold_tree_and_labels_by_hand():
    task = DyckTask(n_types=2)
    ex = task.make_example(task.encode(["(", "[", "]", ")", "(", ")"]))
    assert ex.tree == ((0, 6), (0, 4), (1, 3), (4, 6))
    assert ex.word_positions == (1, 2, 3, 4, 5, 6)
    assert ex.token_labels["nesting"] == (-1, 1, 2, 2, 1, 1, 1, -1)
    assert ex.token_labels["depth"] == (0, 2, 3, 3, 2, 2, 2, 0)
    assert ex.token_labels["bracket_type"] == (-1, 0, 1, 1, 0, 0, 0, -1)
    assert ex.targets[:-1] == ex.tokens[1:] and ex.targets[-1] == -100
    assert ex.labels["n_segments"] == 2
    with pytest.raises(ValueError, match="well-nested"):
        task.make_example(task.encode(["(", "]", ")"]))


class _StackOracle(torch.nn.Module):
    """Hand-built predictor: at each position put mass on the correct closer (or any given
    fixed closer when ``wrong`` is an int)."""

    def __init__(self, task, fixed_closer=None):
        super().__init__()
        self.task, self.fixed = task, fixed_closer
        self.p = torch.nn.Parameter(torch.zeros(1))

    def forward(self, tokens):
        V = len(self.task.vocab)
        out = torch.zeros(*tokens.shape, V)
        opens = self.task.open_ids.tolist()
        for b, row in enumerate(tokens.tolist()):
            stack = []
            for t, tok in enumerate(row):
                if tok in opens:
                    stack.append(tok)
                elif tok in self.task.close_ids.tolist():
                    stack.pop()
                if self.fixed is not None:
                    out[b, t, self.fixed] = 5.0
                elif stack:
                    out[b, t, stack[-1] + self.task.n_types] = 5.0
        return out


def test_metric_perfect_and_wrong_predictors():
    task = DyckTask(n_types=2, max_depth=4, max_length=16)
    examples = task.sample(200, "test_id", seed=3)
    perfect = task.evaluate(_StackOracle(task), examples=examples, device="cpu")
    assert perfect["closing_acc"] == 1.0 and perfect["seq_acc"] == 1.0
    first = int(task.close_ids[0])
    always_first = task.evaluate(
        _StackOracle(task, fixed_closer=first), examples=examples, device="cpu"
    )
    batch = pad_examples(examples, task.pad_id)
    closers = batch.targets[torch.isin(batch.targets, torch.as_tensor(task.close_ids))]
    assert always_first["closing_acc"] == pytest.approx((closers == first).float().mean().item())
    assert always_first["seq_acc"] < 0.5


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"n_types": 0}, "n_types"),
        ({"max_depth": 0}, "max_depth"),
        ({"min_length": 10, "max_length": 4}, "min_length"),
        ({"ood": "width"}, "ood"),
        ({"holdout_fraction": 1.5}, "holdout_fraction"),
        ({"ood": "depth", "max_depth": 8, "max_length": 16}, "ood_max_depth"),
    ],
)
def test_bad_parameters(kwargs, name):
    with pytest.raises(ValueError, match=name):
        DyckTask(**kwargs)


def test_registry_errors():
    with pytest.raises(ValueError, match="did you mean 'dyck'"):
        get_task("dyk")
    with pytest.raises(ValueError, match="max_depth"):
        get_task("dyck", max_dept=3)
    with pytest.raises(ValueError, match="positive integer"):
        get_task("dyck").sample(0)
    with pytest.raises(ValueError, match="split"):
        get_task("dyck").sample(5, "validation")
