"""Task causal models: counterfactual outputs agree with regenerated inputs, minimal pairs
are minimal and reproducible, bad requests fail clearly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hierlens.models import get_task
from hierlens.models.tasks.variables import (
    causal_model,
    list_causal_tasks,
    minimal_pairs,
    pairs_from_inputs,
)

CASES = [
    ("dyck", {}, "depth"),
    ("dyck", {}, "stack_top"),
    ("question_formation", {}, "main_aux"),
    ("question_formation", {}, "subject_extent"),
    ("tense_inflection", {}, "subject_number"),
    ("tense_inflection", {}, "attractor_number"),
    ("hierarchical_filtering", {"depth": 3}, "node_h1_i2"),
    ("hierarchical_filtering", {"depth": 3}, "node_h2_i0"),
    ("stack_manipulation", {}, "stack_top"),
    ("reverse_string", {}, "head_symbol"),
    ("duplicate_string", {}, "head_symbol"),
]
REGENERABLE = {(c[0], c[2]) for c in CASES if c[2] != "subject_extent"}


@pytest.mark.parametrize("name,params,variable", CASES)
def test_counterfactual_equals_regenerated_output(name, params, variable):
    cm = causal_model(get_task(name, **params))
    inputs = cm.inputs(80, "test_id", seed=5)
    rng = np.random.default_rng(0)
    checked = 0
    for base, source in zip(inputs[:40], inputs[40:]):
        if base.values[variable] == source.values[variable]:
            continue
        cf = cm.counterfactual(base, source, variable)
        again = cm.regenerate(base, variable, source.values[variable], rng)
        if cf is None or again is None:
            continue
        assert again.values[variable] == source.values[variable]
        assert again.output == cf, (base, source)
        checked += 1
    if (name, variable) in REGENERABLE:
        assert checked >= 5
    else:
        assert checked == 0


@pytest.mark.parametrize("name,params,variable", CASES)
def test_minimal_pairs_differ_in_one_variable(name, params, variable):
    task = get_task(name, **params)
    cm = causal_model(task)
    pairs = minimal_pairs(task, variable, 12, seed=3)
    assert len(pairs) == 12 and pairs.same_length
    bv, sv = pairs.base_values, pairs.source_values
    assert bool((bv[variable] != sv[variable]).all())
    for other in cm.held_fixed(variable):
        assert torch.equal(bv[other], sv[other])
    if variable in cm.null_variables:
        assert torch.equal(pairs.counterfactual, pairs.base_label)
    else:
        assert bool((pairs.counterfactual != pairs.base_label).all())
    # labels are the task's own targets at the query
    for row in range(3):
        L = int(pairs.base_lengths[row])
        q = int(pairs.base_query[row])
        assert q < L and int(pairs.base[row, q + 1 :].ne(pairs.pad_id).sum()) <= L - q - 1


def test_dyck_labels_match_the_task_targets():
    task = get_task("dyck", n_types=3)
    cm = causal_model(task, after="any")
    for inp in cm.inputs(50, "train", seed=1):
        # the next token of a well-formed continuation: a brute-force stack
        stack = []
        for t in inp.tokens[1:]:
            if t < 3 + task.n_types:
                stack.append(t - 3)
            else:
                assert stack.pop() == t - 3 - task.n_types
        assert inp.output == 3 + task.n_types + stack[-1]
        assert inp.values == {"depth": len(stack), "stack_top": stack[-1]}


def test_pairs_are_seeded():
    task = get_task("dyck")
    a = minimal_pairs(task, "depth", 10, seed=7)
    b = minimal_pairs(task, "depth", 10, seed=7)
    c = minimal_pairs(task, "depth", 10, seed=8)
    assert torch.equal(a.base, b.base) and torch.equal(a.source, b.source)
    assert not torch.equal(a.base, c.base)
    train, held = a.split(0.3, seed=0)
    assert len(train) + len(held) == 10


def test_bad_requests_fail_clearly():
    task = get_task("dyck")
    with pytest.raises(ValueError, match="no variable 'dept'.*did you mean 'depth'"):
        minimal_pairs(task, "dept", 5)
    with pytest.raises(ValueError, match="has no causal model"):
        causal_model(get_task("parity_check"))
    with pytest.raises(ValueError, match="needs subtask='root'"):
        causal_model(get_task("hierarchical_filtering", subtask="mask"))
    cm = causal_model(task)
    inputs = cm.inputs(60, "test_id", seed=0)
    b = next(i for i in inputs if i.values["depth"] >= 2)
    s = next(i for i in inputs if i.values["depth"] < b.values["depth"]
             and i.values["stack_top"] != b.values["stack_top"])  # fmt: skip
    with pytest.raises(ValueError, match="differs in 'stack_top' as well as 'depth'"):
        pairs_from_inputs(cm, "depth", [b], [s])
    pairs_from_inputs(cm, "depth", [b], [s], allow_more=True)
    assert "dyck" in list_causal_tasks()
