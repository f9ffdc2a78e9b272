"""The planted mechanism: DAS finds the hand-set subspace, patching localises it, attribution
patching ranks it first; IIA equals a one-pair-at-a-time reference; bad inputs fail early."""

from __future__ import annotations

import pytest
import torch

from hierlens.analysis.causal.alignment import DASConfig, das, random_basis
from hierlens.analysis.causal.attribution import agreement, attribution_patching
from hierlens.analysis.causal.interchange import Alignment, interchange_accuracy
from hierlens.analysis.causal.patching import activation_patching
from hierlens.analysis.causal.planted import PlantedModel, planted_pairs
from hierlens.analysis.causal.sites import editing_hooks, forward_logits

HOOKS = ["hook_embed", "hook_mid"]
CONFIG = DASConfig(rank=2, steps=120, lr=0.05, batch_size=32)


@pytest.fixture(scope="module")
def planted():
    model = PlantedModel(n_values=3, n_distractors=5, seed=0)
    return model, planted_pairs(model, 120, seed=1)


@pytest.fixture(scope="module")
def found(planted):
    model, pairs = planted
    return das(model, pairs, HOOKS, CONFIG)


def test_das_finds_the_planted_subspace(planted, found):
    model, _ = planted
    chance = 1 / model.n_values
    assert found.iia_test["hook_mid"] >= 0.99
    assert found.iia_test["hook_embed"] <= chance + 0.05
    cosines = torch.linalg.svdvals(found.bases["hook_mid"] @ model.U)  # principal angles
    assert float(cosines.min()) > 0.99
    basis = found.bases["hook_mid"]
    torch.testing.assert_close(basis @ basis.T, torch.eye(2), atol=1e-5, rtol=0)


def test_random_subspace_of_the_same_rank_does_not(planted):
    model, pairs = planted
    iia = interchange_accuracy(model, pairs, Alignment("hook_mid", "query", random_basis(8, 2, 3)))
    assert iia[0] < 0.9


def test_stacked_search_equals_one_hook_at_a_time(planted, found):
    model, pairs = planted
    alone = das(model, pairs, ["hook_mid"], CONFIG)
    assert alone.iia_test["hook_mid"] == found.iia_test["hook_mid"]
    torch.testing.assert_close(alone.bases["hook_mid"], found.bases["hook_mid"], atol=1e-4, rtol=0)


def test_patching_localises_and_attribution_ranks_it_first(planted):
    model, pairs = planted
    pairs = pairs.subset(slice(0, 30))
    real = activation_patching(model, pairs, HOOKS)
    mid, embed = real.effect("hook_mid"), real.effect("hook_embed")
    q = int(pairs.base_query[0])
    assert float(mid[q]) == pytest.approx(1.0, abs=1e-6)
    assert float(mid[:q].abs().max()) < 1e-6  # only the query's copy is read out
    assert float(embed[q]) == pytest.approx(0.0, abs=1e-6)
    assert float(embed[0]) == pytest.approx(1.0, abs=1e-6)  # the value token itself
    est = attribution_patching(model, pairs, HOOKS)
    flat = torch.cat([est.effect(h).abs() for h in HOOKS])
    assert int(flat.argmax()) == len(embed) + q  # (hook_mid, query) first
    stats = agreement(real, est)
    assert stats["n_sites"] == 2 * len(embed)


def _iia_reference(model, pairs, hook, basis):
    """One base, one source, one intervened forward at a time."""
    hits = 0
    for b in range(len(pairs)):
        seen = {}

        def keep(x, seen=seen):
            seen["s"] = x.clone()
            return x

        L = pairs.source_lengths[b : b + 1]
        with torch.no_grad(), editing_hooks(model, {hook: keep}):
            forward_logits(model, pairs.source[b : b + 1], L)
        s = seen["s"][0, int(pairs.source_query[b])]

        def swap(x, b=b, s=s):
            x = x.clone()
            q = int(pairs.base_query[b])
            x[0, q] = x[0, q] + (s - x[0, q]) @ basis.T @ basis
            return x

        with torch.no_grad(), editing_hooks(model, {hook: swap}):
            logits = forward_logits(model, pairs.base[b : b + 1], pairs.base_lengths[b : b + 1])
        cand = pairs.candidates[b]
        pred = cand[logits[0, int(pairs.base_query[b]), cand].argmax()]
        hits += int(pred == pairs.counterfactual[b])
    return hits / len(pairs)


def test_iia_equals_a_one_pair_at_a_time_reference(planted):
    model, pairs = planted
    pairs = pairs.subset(slice(0, 40))
    for seed in range(3):
        basis = random_basis(8, 1 + seed, seed)
        got = interchange_accuracy(
            model, pairs, Alignment("hook_mid", "query", basis), batch_size=16
        )
        assert got[0] == _iia_reference(model, pairs, "hook_mid", basis)


def test_bad_inputs_fail_before_training(planted):
    model, pairs = planted
    with pytest.raises(ValueError, match="unknown module name 'hook_mdi'.*hook_mid"):
        das(model, pairs, ["hook_mdi"], CONFIG)
    with pytest.raises(ValueError, match="rank 9 is larger than the width of 'hook_mid' \\(8\\)"):
        das(model, pairs, ["hook_mid"], CONFIG.replace(rank=9))
    with pytest.raises(ValueError, match="positions \\[7\\] fall outside"):
        das(model, pairs, ["hook_mid"], CONFIG.replace(positions="7"))
    bad = pairs.subset(slice(0, 10))
    bad.source_values["value"] = bad.base_values["value"].clone()
    with pytest.raises(ValueError, match="same 'value' in base and source"):
        das(model, bad, ["hook_mid"], CONFIG)
    with pytest.raises(ValueError, match="same 'value' in base and source"):
        activation_patching(model, bad, ["hook_mid"])
    with pytest.raises(ValueError, match="unknown module name 'hook_mdi'"):
        activation_patching(model, pairs, ["hook_mdi"])
    with pytest.raises(ValueError, match="rank-9 subspace does not fit 'hook_mid'"):
        interchange_accuracy(model, pairs, Alignment("hook_mid", "query", torch.randn(9, 8)))
    with pytest.raises(ValueError, match="positions must be 'query' or comma-separated"):
        DASConfig(positions="last")
