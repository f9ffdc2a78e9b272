"""Chomsky-hierarchy tasks: every generator against an independent checker, splits, metric."""

from __future__ import annotations

import itertools

import pytest
import torch

from hierlens.models import get_task
from hierlens.models.tasks import IGNORE_INDEX, gold_depths
from hierlens.models.tasks.chomsky import CHOMSKY_TASKS, accuracy_by_length

ALL = [name for names in CHOMSKY_TASKS.values() for name in names]
N = 150


def _io(task, ex):
    """Input symbols and output symbols (as strings) of an example."""
    L = ex.labels["length"]
    inputs = [task.vocab[t] for t in ex.tokens[:L]]
    outputs = [task.vocab[t] for t in ex.targets if t != IGNORE_INDEX]
    return inputs, outputs


def _examples(task):
    return [ex for split in ("train", "test_id", "test_ood") for ex in task.sample(N, split, 1)]


def _eval_expr(symbols, modulus=5):
    """Reference value with Python's own parser (``-`` unary and binary, usual precedence)."""
    return eval("".join(symbols), {"__builtins__": {}}) % modulus  # noqa: S307


def _check(name, inputs, out, ex):
    if name == "parity_check":
        assert out == ["odd" if inputs.count("1") % 2 else "even"]
    elif name == "even_pairs":
        pairs = sum(a != b for a, b in itertools.pairwise(inputs))
        assert out == ["odd" if pairs % 2 else "even"]
    elif name == "cycle_navigation":
        pos = 0
        for m in inputs:
            pos = (pos + {"stay": 0, "+1": 1, "-1": -1}[m]) % 5
        assert out == [str(pos)]
    elif name in ("modular_arithmetic", "modular_arithmetic_brackets"):
        if name == "modular_arithmetic":
            assert "(" not in inputs and len(inputs) % 2 == 1
        assert out == [str(_eval_expr(inputs))]
    elif name == "solve_equation":
        eq = inputs.index("=")
        lhs, rhs = inputs[:eq], int(inputs[eq + 1])
        assert inputs.count("x") == 1 and eq == len(inputs) - 2
        sols = [v for v in range(5) if _eval_expr([str(v) if s == "x" else s for s in lhs]) == rhs]
        assert out == [str(s) for s in sols]
    elif name == "reverse_string":
        assert out == inputs[::-1]
    elif name == "stack_manipulation":
        stack, depths = [], []
        for s in inputs:
            if s == "POP":
                stack = stack[:-1]
            else:
                stack.append(s[-1])
            depths.append(len(stack))
        expect = stack[::-1] + ["<end>"]
        assert out == expect + ["0"] * (len(inputs) + 1 - len(expect))
        assert list(ex.token_labels["stack_depth"][: len(inputs)]) == depths
    elif name == "duplicate_string":
        assert out == inputs + inputs
    elif name == "missing_duplicate":
        L = len(inputs)
        body = inputs[: L - L % 2]
        assert inputs[L - L % 2 :] == ["#"] * (L % 2) and body.count("_") == 1
        i = body.index("_")
        half = len(body) // 2
        assert out == [body[(i + half) % len(body)]]
    elif name == "odds_first":
        assert out == [s for i, s in enumerate(inputs) if i % 2 == 0] + [
            s for i, s in enumerate(inputs) if i % 2 == 1
        ]
    elif name == "binary_addition":
        plus = inputs.index("+")
        n = int("".join(inputs[:plus])[::-1], 2)
        m = int("".join(inputs[plus + 1 :])[::-1], 2)
        total = list(bin(n + m)[2:][::-1]) + ["<end>"]
        assert n > 0 and m > 0
        assert out == total + ["0"] * (len(inputs) + 1 - len(total))
    elif name == "bucket_sort":
        assert out == sorted(inputs, key=int)
    else:
        raise AssertionError(f"no checker for {name}")


@pytest.mark.parametrize("name", ALL)
def test_generator_matches_independent_checker(name):
    task = get_task(name)
    for ex in _examples(task):
        inputs, out = _io(task, ex)
        L = len(inputs)
        assert len(out) == task.output_length(L)
        assert len(ex.tokens) == task.seq_len(L) <= task.max_len
        # layout: inputs, then blanks only; targets only at the last output positions
        assert all(t == task.blank_id for t in ex.tokens[L:])
        assert all(t == IGNORE_INDEX for t in ex.targets[: len(ex.tokens) - len(out)])
        _check(name, inputs, out, ex)
        assert list(ex.token_labels["depth"]) == gold_depths(L, ex.tree) + [0] * (len(ex) - L)


def _nesting_tree(symbols):
    spans, opened = {(0, len(symbols))}, []
    for t, s in enumerate(symbols):
        if s == "(":
            opened.append(t)
        elif s == ")":
            spans.add((opened.pop(), t + 1))
    return spans


@pytest.mark.parametrize("name", ["modular_arithmetic_brackets", "solve_equation"])
def test_bracket_tasks_give_the_nesting_as_tree(name):
    task = get_task(name)
    for ex in task.sample(100, "train", 2):
        inputs, _ = _io(task, ex)
        assert set(ex.tree) == _nesting_tree(inputs)
        depth = [
            1 + sum(i <= t < j for i, j in _nesting_tree(inputs) if (i, j) != (0, len(inputs)))
            for t in range(len(inputs))
        ]
        assert list(ex.token_labels["depth"][: len(inputs)]) == depth


def test_flat_tree_elsewhere():
    ex = get_task("parity_check").sample(1, "train", 0)[0]
    assert ex.tree == ((0, ex.labels["length"]),)


@pytest.mark.parametrize("name", ALL)
def test_split_lengths_and_disjointness(name):
    task = get_task(name, n_train=10, n_test=14)
    train = task.sample(300, "train", 0)
    test_id = task.sample(100, "test_id", 0)
    ood = task.sample(60, "test_ood", 0)
    low = task.min_length
    assert {e.labels["length"] for e in train} <= set(range(low, 11))
    assert {e.labels["length"] for e in test_id} <= set(range(low, 11))
    assert {e.labels["length"] for e in ood} <= set(range(11, 15))
    key = lambda e: e.tokens  # noqa: E731
    train_keys = {key(e) for e in train}
    for e in test_id:
        if task.holds_out(e.labels["length"]):
            assert key(e) not in train_keys
            assert task.is_test_id(_io(task, e)[0])
    for e in train:
        if task.holds_out(e.labels["length"]):
            assert not task.is_test_id(_io(task, e)[0])
    # determinism
    assert task.sample(20, "train", 5) == task.sample(20, "train", 5)


def test_short_lengths_are_shared_between_train_and_test_id():
    task = get_task("parity_check")
    assert not task.holds_out(3) and task.holds_out(12)
    strings = {e.tokens for e in task.sample_length(40, 2, "test_id", seed=0)}
    assert strings == {e.tokens for e in task.sample_length(40, 2, "train", seed=1)}


class Oracle(torch.nn.Module):
    """Predicts every position's target (or a wrong output symbol when ``wrong``)."""

    def __init__(self, task, wrong=False):
        super().__init__()
        self.task, self.wrong = task, wrong
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, tokens):
        logits = torch.zeros(*tokens.shape, len(self.task.vocab))
        ids = self.task.output_ids.tolist()
        for b, row in enumerate(tokens.tolist()):
            targets = self.examples[tuple(t for t in row if t != self.task.pad_id)]
            for t, y in enumerate(targets):
                if y != IGNORE_INDEX:
                    y = ids[(ids.index(y) + 1) % len(ids)] if self.wrong else y
                    logits[b, t, y] = 1.0
        return logits


@pytest.mark.parametrize("name", ["parity_check", "binary_addition", "solve_equation"])
def test_metric_perfect_and_wrong_predictor(name):
    task = get_task(name, n_train=8, n_test=12)
    examples = task.sample(60, "test_ood", 3)
    for wrong, expect in ((False, 1.0), (True, 0.0)):
        model = Oracle(task, wrong)
        model.examples = {e.tokens: e.targets for e in examples}
        res = task.evaluate(model, examples=examples, batch_size=16)
        assert res["accuracy"] == pytest.approx(expect)
        assert res["seq_acc"] == pytest.approx(expect)
        curve = accuracy_by_length(res)
        assert set(curve) == {e.labels["length"] for e in examples}
        assert all(v == pytest.approx(expect) for v in curve.values())


def test_metric_averages_over_lengths_and_stops_at_end_token():
    task = get_task("binary_addition", n_train=5, n_test=8)
    examples = task.sample_length(3, 4, "train") + task.sample_length(1, 5, "train")
    model = Oracle(task)
    model.examples = {e.tokens: list(e.targets) for e in examples}
    # corrupt the padding after <end> (not scored) and one scored position of the length-5 one
    end = task.token_id("<end>")
    for e in examples:
        tg = model.examples[e.tokens]
        k = tg.index(end)
        tg[k + 1 :] = [task.token_id("1") if y != IGNORE_INDEX else y for y in tg[k + 1 :]]
    long = examples[-1]
    tg = model.examples[long.tokens]
    first = next(i for i, y in enumerate(tg) if y != IGNORE_INDEX)
    tg[first] = task.token_id("0") if tg[first] == task.token_id("1") else task.token_id("1")
    res = task.evaluate(model, examples=examples)
    n_scored = list(long.targets).index(end) - first + 1
    assert res["accuracy_len_4"] == 1.0
    assert res["accuracy_len_5"] == pytest.approx(1 - 1 / n_scored)
    assert res["accuracy"] == pytest.approx((1 + 1 - 1 / n_scored) / 2)


def test_evaluate_balances_lengths():
    task = get_task("even_pairs", n_train=4, n_test=7)

    class Const(torch.nn.Module):
        def forward(self, tokens):
            return torch.zeros(*tokens.shape, len(task.vocab))

    res = task.evaluate(Const(), "test_ood", n=30)
    assert sorted(accuracy_by_length(res)) == [5, 6, 7] and res["n"] == 30


def test_bad_parameters_are_value_errors():
    with pytest.raises(ValueError, match="n_test"):
        get_task("reverse_string", n_train=10, n_test=10)
    with pytest.raises(ValueError, match="n_train"):
        get_task("solve_equation", n_train=2)
    with pytest.raises(ValueError, match="test_id_fraction"):
        get_task("bucket_sort", test_id_fraction=1.5)
    with pytest.raises(ValueError, match="not in split"):
        get_task("bucket_sort").sample_length(3, 40, "train")


def test_computation_steps_add_blanks():
    task = get_task("reverse_string", computation_steps_mult=2)
    ex = task.sample_length(1, 5, "train")[0]
    assert len(ex.tokens) == 5 + 10 + 5
    assert sum(t != IGNORE_INDEX for t in ex.targets) == 5
