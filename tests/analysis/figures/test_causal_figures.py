"""The shared part of the causal figures: the interchange map against one forward per
intervention, the no-intervention controls, and the per-variable statements."""

from __future__ import annotations

import math

import pytest
import torch

from hierlens.analysis.figures.causal import (
    _no_intervention,
    interchange_map,
    residual_hooks,
    variable_statement,
)
from hierlens.analysis.figures.causal_question import causal_question, results_rows
from hierlens.models import ModelConfig, build_transformer, get_task
from hierlens.models.tasks.variables import minimal_pairs

HOOKS = ["blocks.0.hook_resid_pre", "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]


def hand_made_study() -> dict:
    """Data of the shape :func:`causal_question` returns (two variables, three hooks)."""
    das = []
    for v, iia, probe in (("main_aux", [0.1, 0.95, 0.97], [0.2, 0.99, 1.0]),
                          ("subject_extent", [0.1, 0.2, 0.3], [0.5, 0.95, 1.0])):  # fmt: skip
        for h, x, p in zip(HOOKS, iia, probe):
            das.append({"variable": v, "hook": h, "das": x, "probe": p, "random_model": 0.1,
                        "random_subspace": 0.0, "chance": 0.125})  # fmt: skip
    patching = [{"variable": "main_aux", "hooks": HOOKS, "offsets": [-1, 0], "n_pairs": 4,
                 "effect": {HOOKS[0]: [0.9, 0.0], HOOKS[1]: [0.0, 0.8], HOOKS[2]: [0.0, 1.0]}}]  # fmt: skip
    interchange = [
        {"variable": v, "n_pairs": 4, "offsets": [-1, 0],
         "by_offset": {h: [0.25, 0.5] for h in HOOKS},
         "at": {"main auxiliary": {h: 0.75 for h in HOOKS}}}
        for v in ("main_aux", "subject_extent")
    ]  # fmt: skip
    data = {"hooks": HOOKS, "rank": 2, "das": das, "patching": patching,
            "interchange": interchange, "test_id": {"first_word_acc": 0.99}}  # fmt: skip
    data["statements"] = [variable_statement(data, v) for v in ("main_aux", "subject_extent")]
    return data


@pytest.fixture(scope="module")
def qf_model():
    task = get_task("question_formation")
    config = ModelConfig.for_task(task, d_model=16, n_layers=2, n_heads=2, seed=3)
    return build_transformer(config, device="cpu").eval(), task


def _base_predictions(model, pairs) -> torch.Tensor:
    preds = []
    for b in range(len(pairs)):
        n, q = int(pairs.base_lengths[b]), int(pairs.base_query[b])
        with torch.no_grad():
            logits = model(pairs.base[b : b + 1, :n])
        cand = pairs.candidates[b]
        preds.append(int(cand[int(logits[0, q, cand].argmax())]))
    return torch.tensor(preds)


def _reference_map(model, pairs, hooks) -> torch.Tensor:
    """One forward per (pair, hook, position): run the source alone to record its
    activation, then the base alone with that one position overwritten."""
    B, T = pairs.base.shape
    out = torch.full((len(hooks), B, T), float("nan"), dtype=torch.float64)
    for b in range(B):
        n = int(pairs.base_lengths[b])
        q = int(pairs.base_query[b])
        src_tokens = pairs.source[b : b + 1, :n]
        base_tokens = pairs.base[b : b + 1, :n]
        for i, hook in enumerate(hooks):
            store = {}

            def keep(x, hook, store=store):  # noqa: ARG001
                store["x"] = x.detach().clone()

            with torch.no_grad():
                model.run_with_hooks(src_tokens, fwd_hooks=[(hook, keep)])
            for p in range(q + 1):

                def put(x, hook, p=p, src=store["x"]):  # noqa: ARG001
                    x = x.clone()
                    x[:, p] = src[:, p]
                    return x

                with torch.no_grad():
                    logits = model.run_with_hooks(base_tokens, fwd_hooks=[(hook, put)])
                cand = pairs.candidates[b]
                pred = cand[int(logits[0, q, cand].argmax())]
                out[i, b, p] = float(pred == pairs.counterfactual[b])
    return out


@pytest.mark.parametrize("variable", ["main_aux", "subject_extent"])
def test_interchange_map_equals_one_forward_per_intervention(qf_model, variable):
    model, task = qf_model
    pairs = minimal_pairs(task, variable, 4, seed=2)
    # a random model seldom outputs the counterfactual; scoring against its own unintervened
    # output instead makes a hit "the swap left the output alone", which both ways occur
    pairs.counterfactual = _base_predictions(model, pairs)
    fast = interchange_map(model, pairs, HOOKS, batch_size=3)  # several batches per position
    slow = _reference_map(model, pairs, HOOKS)
    assert fast.shape == slow.shape == (len(HOOKS), *pairs.base.shape)
    assert torch.equal(fast.isnan(), slow.isnan())
    seen = ~slow.isnan()
    assert torch.equal(fast[seen], slow[seen])
    assert 0 < int(slow[seen].sum()) < int(seen.sum())  # both outcomes occur: not trivial
    # after the query (and past the input) nothing is measured
    for b in range(len(pairs)):
        assert bool(fast[:, b, int(pairs.base_query[b]) + 1 :].isnan().all())


def test_interchange_map_at_embeddings_swaps_the_token(qf_model):
    # swapping the embedding of the main auxiliary is swapping the word: the map at that
    # position equals the unintervened model run on the source (same subject, other aux)
    model, task = qf_model
    pairs = minimal_pairs(task, "main_aux", 6, seed=4)
    hits = interchange_map(model, pairs, ["blocks.0.hook_resid_pre"])
    at_aux = hits[0, torch.arange(6), pairs.base_values["subject_extent"] + 1]
    swapped = pairs.subset(slice(None))
    swapped.base, swapped.base_label = pairs.source, pairs.counterfactual
    on_source = _no_intervention(model, swapped)["base_acc"]
    assert math.isclose(float(at_aux.mean()), on_source)


def test_no_intervention_against_a_loop(qf_model):
    model, task = qf_model
    pairs = minimal_pairs(task, "subject_extent", 6, seed=1)
    preds = _base_predictions(model, pairs)
    got = _no_intervention(model, pairs)
    assert got["baseline"] == pytest.approx(float((preds == pairs.counterfactual).double().mean()))
    assert got["base_acc"] == pytest.approx(float((preds == pairs.base_label).double().mean()))


def test_variable_statement_agreement_and_disagreement():
    data = hand_made_study()
    main, extent = data["statements"]
    assert main["best_hook"] == HOOKS[2] and main["best_das"] == 0.97
    assert main["used"] == main["decodable"] == HOOKS[1:] and main["agree"]
    assert "the probe agrees" in main["text"]
    assert main["map_offset"] == 0 and main["map_best"] == 0.5  # the best cell of the map
    assert main["anchors"]["main auxiliary"]["iia"] == 0.75
    assert extent["used"] == [] and extent["decodable"] == HOOKS[1:] and not extent["agree"]
    assert "decodable but not used at 0.resid_post, 1.resid_post" in extent["text"]
    with pytest.raises(ValueError, match="no DAS records"):
        variable_statement(data, "depth")


def test_residual_hooks():
    assert residual_hooks(1) == [
        "blocks.0.hook_resid_pre", "blocks.0.hook_resid_mid", "blocks.0.hook_resid_post"
    ]  # fmt: skip


def test_causal_question_rejects_bad_settings_before_training():
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        causal_question(steps=0)
    with pytest.raises(ValueError, match="n_layers"):
        causal_question(n_layers=1.5)  # type: ignore[arg-type]


def test_results_row_reads_every_number_from_the_record():
    data = hand_made_study()
    data.update(
        model={"d_model": 48, "n_layers": 2, "n_heads": 4},
        train={"steps": 1234, "lr": 1e-3},
        test_ood={"first_word_acc": 0.4321},
        controls=[{"variable": v, "baseline": 0.015, "base_acc": 0.9}
                  for v in ("main_aux", "subject_extent")],
    )  # fmt: skip
    for r in data["das"]:
        r["n_pairs"] = 77
    (row,) = results_rows({"name": "causal-question", "data": data})
    assert "d_model 48, 1234 steps at lr 0.001" in row["setting"]
    assert "accuracy 0.990 in distribution, 0.432 out of distribution" in row["setting"]
    assert "rank-2 DAS" in row["setting"] and "77 pairs" in row["setting"]
    assert "no intervention 0.015" in row["ours"] and "chance 0.125" in row["ours"]
    assert row["verdict"] == (
        "partly: main_aux: used where decodable (0.resid_post, 1.resid_post; IIA of the whole "
        "activation n/a, of a rank-2 subspace 0.970); subject_extent: decodable (probe up to "
        "1.000) but not used at the query (DAS IIA at most 0.300)"
    )
    assert results_rows(None)[0]["verdict"] == "not run (no causal-question record)"
