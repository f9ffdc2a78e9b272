"""The L0 frontier: every registered architecture at four sparsities in one fused call, on
the MP-SAE toy and on hierarchical-filtering activations; fused training equals training
each SAE alone; an empty L0 range is refused."""

from __future__ import annotations

import math

import pytest
import torch

from hierlens.models import get_task
from hierlens.models.capture import capture
from hierlens.models.tasks.ground_truth import ground_truth
from hierlens.models.tasks.mpsae_toy import MPSAEToy
from hierlens.models.transformer import ModelConfig, build_transformer
from hierlens.sae import (
    SAE,
    FrontierSpec,
    SAETrainConfig,
    frontier_curves,
    frontier_records,
    frontier_saes,
    train_frontier,
    train_saes,
)

CONFIG = SAETrainConfig(steps=40, batch_size=100, lr=1e-2, log_every=20, device="cpu")


def _check_frontier(records, n_points=4):
    archs = {r["architecture"] for r in records}
    assert archs == set(SAE.registry)
    curves = frontier_curves(records, ("fvu", "mcc", "mean_f1", "absorption"))
    for arch, curve in curves.items():
        assert len(curve["l0"]) >= n_points, arch
        assert all(math.isfinite(v) for v in curve["l0"])
        assert curve["l0"] == sorted(curve["l0"])
        assert max(curve["l0"]) > min(curve["l0"]), arch  # the knob moved L0
        assert all(0.0 <= v <= 1.0 for v in curve["mcc"]), arch


def test_frontier_on_the_mpsae_toy():
    toy = MPSAEToy(within_cosine=0.5)
    train, held = toy.sample(2000, seed=0), toy.sample(800, seed=1)
    spec = FrontierSpec(d_sae=toy.dim, matryoshka_widths=(3, 11))
    saes, result = train_frontier(spec, train.x, toy.dim, config=CONFIG)
    assert len(saes) == 4 * len(SAE.registry) and result.steps == CONFIG.steps
    records = frontier_records(saes, held.x, toy.ground_truth(held))
    _check_frontier(records)
    by_name = {r["name"]: r for r in records}
    assert by_name["topk_w20_k2"]["l0"] == pytest.approx(2.0)
    assert by_name["mp_w20_k4"]["knob"] == "iterations"
    assert set(by_name["relu_w20_l1c0.1"]["per_level"]) == {"0", "1"}


def test_frontier_on_hierarchical_filtering_activations():
    task = get_task("hierarchical_filtering", q=3, depth=3)
    model = build_transformer(
        ModelConfig.for_task(task, d_model=16, n_layers=1, n_heads=2), device="cpu"
    )
    hook = "blocks.0.hook_resid_post"
    train_ex, eval_ex = task.sample(150, seed=0), task.sample(60, seed=1)
    acts = {
        name: capture(model, ex, hook, batch_size=64, progress=False)[hook]
        for name, ex in (("train", train_ex), ("eval", eval_ex))
    }
    truth = ground_truth(task, eval_ex)
    assert truth.n_rows == acts["eval"].shape[0]
    spec = FrontierSpec(d_sae=24)
    saes, _ = train_frontier(spec, acts["train"], 16, config=CONFIG, hook_name=hook)
    records = frontier_records(saes, acts["eval"], truth)
    _check_frontier(records)
    with pytest.raises(ValueError, match="not aligned"):
        frontier_records(saes, acts["eval"][:-1], truth)


def test_fused_frontier_equals_separate_training():
    x = MPSAEToy().sample(600, seed=2).x
    spec = FrontierSpec(d_sae=12, ks=(1, 3), mp_iterations=(1, 2), l1_coefficients=(0.1, 0.01),
                        l0_coefficients=(0.1, 0.01), matryoshka_widths=(4,))  # fmt: skip
    cfg = CONFIG.replace(steps=12, shuffle=False, warmup_steps=2)
    fused, _ = train_frontier(spec, x, 20, config=cfg)
    alone, _ = frontier_saes(spec, 20, device="cpu")
    for sae in alone.values():
        train_saes([sae], x, config=cfg, progress=False)
    for name, a in fused.items():
        b = alone[name]
        for t in a.tensor_names:
            torch.testing.assert_close(getattr(a, t), getattr(b, t), atol=2e-5, rtol=1e-4,
                                       msg=lambda m, n=name, t=t: f"{n}.{t}: {m}")  # fmt: skip


def test_empty_l0_range_and_unknown_architecture():
    with pytest.raises(ValueError, match="empty L0 range for 'mp'"):
        FrontierSpec(mp_iterations=())
    with pytest.raises(ValueError, match="empty L0 range for 'relu'"):
        FrontierSpec(architectures=("relu",), l1_coefficients=())
    with pytest.raises(ValueError, match="unknown architecture"):
        FrontierSpec(architectures=("nope",))
    spec = FrontierSpec(architectures=("topk",), ks=(2,))
    assert spec.chosen == ("topk",) and FrontierSpec(architectures=("TopKSAE",)).chosen == ("topk",)
