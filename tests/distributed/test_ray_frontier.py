"""The run-level L0 frontier with each hook a Ray task gives the same SAEs and records as
the in-process run."""

from __future__ import annotations

import shutil

import pytest
import torch

from hierlens.analysis.sae_frontier import fit_sae_frontier
from hierlens.models import ModelConfig, TrainConfig, build_transformer, get_task, train
from hierlens.models.run import Run
from hierlens.sae import FrontierSpec, SAETrainConfig, load_sae

TASK = get_task("hierarchical_filtering", q=3, depth=2)
HOOKS = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
KW = dict(
    spec=FrontierSpec(d_sae=8, ks=(1, 2), mp_iterations=(1, 2), l1_coefficients=(0.1, 0.01),
                      l0_coefficients=(0.1, 0.01)),
    config=SAETrainConfig(steps=6, batch_size=16, device="cpu"),
    n=24, device="cpu", progress=False,
)  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("ray_frontier") / "run"
    mc = ModelConfig.for_task(TASK, d_model=8, n_layers=2, n_heads=2, seed=0)
    cfg = TrainConfig(steps=2, batch_size=4, warmup_steps=1, eval_every=0, checkpoint_every=2,
                      device="cpu")  # fmt: skip
    train(build_transformer(mc, device="cpu"), TASK, cfg, path, model_config=mc, progress=False)
    return path


def test_frontier_on_ray_equals_in_process(run_dir, tmp_path, ray_local):
    seq = shutil.copytree(run_dir, tmp_path / "seq")
    on_ray = shutil.copytree(run_dir, tmp_path / "ray")
    a = fit_sae_frontier(seq, HOOKS, **KW)
    b = fit_sae_frontier(on_ray, HOOKS, backend="ray", **KW)
    assert [r["sae"] for r in a["records"]] == [r["sae"] for r in b["records"]]
    assert len(a["records"]) == 2 * 2 * 6
    for ra, rb in zip(a["records"], b["records"]):
        assert ra["mcc"] == pytest.approx(rb["mcc"], abs=1e-6)
        x, y = load_sae(Run(seq).sae_dir(ra["sae"])), load_sae(Run(on_ray).sae_dir(rb["sae"]))
        torch.testing.assert_close(x.W_dec, y.W_dec, atol=1e-6, rtol=1e-5)
