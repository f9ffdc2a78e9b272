"""Batched activation patching equals one forward per intervention, on every model family;
attribution patching equals its closed form on a model that is linear in the patched site."""

from __future__ import annotations

import pytest
import torch

from hierlens.analysis.causal.patching import activation_patching, query_metric
from hierlens.analysis.causal.sites import capture_sites, editing_hooks, forward_logits
from hierlens.models.hooks import resolve_hook_names


def _reference(model, pairs, hooks, direction, metric):
    """One forward of one row per (pair, hook, position, head)."""
    out = {}
    clean = pairs.base
    corrupt = pairs.source
    L = pairs.base_lengths
    _, clean_acts = capture_sites(model, clean, L, hooks)
    _, corrupt_acts = capture_sites(model, corrupt, L, hooks)
    recipient, donor = (corrupt, clean_acts) if direction == "denoise" else (clean, corrupt_acts)
    B, T = clean.shape
    for name in hooks:
        act = donor[name]
        heads = act.shape[2] if act.dim() == 4 else 0
        res = torch.full((B, T, heads) if heads else (B, T), float("nan"), dtype=torch.float64)
        for b in range(B):
            for t in range(int(L[b])):
                for k in range(max(heads, 1)):

                    def edit(x, b=b, t=t, k=k, heads=heads, name=name):
                        x = x.clone()
                        if heads:
                            x[0, t, k] = donor[name][b, t, k]
                        else:
                            x[0, t] = donor[name][b, t]
                        return x

                    with torch.no_grad(), editing_hooks(model, {name: edit}):
                        logits = forward_logits(model, recipient[b : b + 1], L[b : b + 1])
                    value = query_metric(
                        logits, pairs.base_query[b : b + 1], pairs.base_label[b : b + 1],
                        pairs.source_label[b : b + 1], pairs.candidates[b : b + 1], metric,
                    ).double()  # fmt: skip
                    if heads:
                        res[b, t, k] = value
                    else:
                        res[b, t] = value
        out[name] = res
    return out


@pytest.mark.parametrize("direction,metric", [("denoise", "logit_diff"), ("noise", "prob")])
def test_batched_patching_equals_one_forward_per_intervention(
    any_model, top_pairs, direction, metric
):
    name, model, hooks = any_model
    hooks = resolve_hook_names(model, hooks)
    got = activation_patching(model, top_pairs, hooks, direction=direction, metric=metric,
                              batch_size=7)  # fmt: skip
    ref = _reference(model, top_pairs, hooks, direction, metric)
    for hook in hooks:
        torch.testing.assert_close(got.patched[hook], ref[hook], atol=1e-5, rtol=0, equal_nan=True)
    # the unpatched runs bracket the sweep: patching nothing-differs positions changes nothing
    assert got.clean.shape == (len(top_pairs),)
    assert not torch.isnan(got.patched[hooks[0]][0, : int(top_pairs.base_lengths[0])]).any()
