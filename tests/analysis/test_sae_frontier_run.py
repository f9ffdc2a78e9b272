"""The L0 frontier of a run's own SAEs: one fused training on a captured hook of a
hierarchical-filtering run, records scored against the task's per-token ground truth,
SAEBench-layout files, a rerun that trains nothing, and the report section with feature
cards annotated by matched true feature and tree level."""

from __future__ import annotations

import json
import math

import pytest

from hierlens.analysis import write_report
from hierlens.analysis.sae_frontier import fit_sae_frontier
from hierlens.models import ModelConfig, TrainConfig, build_transformer, get_task, train
from hierlens.models.run import Run
from hierlens.sae import SAE, FrontierSpec, SAETrainConfig

TASK = get_task("hierarchical_filtering", q=3, depth=2)
HOOK = "blocks.0.hook_resid_post"
SPEC = FrontierSpec(d_sae=12, ks=(1, 2, 3, 4), mp_iterations=(1, 2, 3, 4))
KW = dict(spec=SPEC, config=SAETrainConfig(steps=10, batch_size=32, device="cpu"), n=40,
          device="cpu", progress=False)  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("frontier") / "run"
    mc = ModelConfig.for_task(TASK, d_model=8, n_layers=1, n_heads=2, seed=0)
    cfg = TrainConfig(steps=4, batch_size=8, warmup_steps=1, eval_every=0, checkpoint_every=4,
                      device="cpu")  # fmt: skip
    train(build_transformer(mc, device="cpu"), TASK, cfg, path, model_config=mc, progress=False)
    return path


def test_run_frontier_records_files_and_report(run_dir):
    out = fit_sae_frontier(run_dir, [HOOK], **KW)
    run = Run(run_dir)
    records = out["records"]
    assert len(records) == 4 * len(SAE.registry) and out["ground_truth"]
    for arch in SAE.registry:
        assert len([r for r in records if r["architecture"] == arch]) == 4
    for r in records:
        assert (run.sae_dir(r["sae"]) / "cfg.json").is_file()
        assert math.isfinite(r["ce_loss_recovered"]) and 0.0 <= r["mcc"] <= 1.0
        assert all(m["latent"] >= 0 for m in r["matches"])
    assert json.loads(run.sae_frontier_path.read_text())["records"][0]["sae"] == records[0]["sae"]
    core = sorted((run.saebench_dir / "core").iterdir())
    gt = sorted((run.saebench_dir / "hierlens_ground_truth").iterdir())
    assert len(core) == len(gt) == len(records)
    first = json.loads(core[0].read_text())
    assert first["eval_result_metrics"]["model_performance_preservation"]["ce_loss_score"] != -1
    # a rerun trains nothing and scores the same SAEs
    mtimes = {r["sae"]: (run.sae_dir(r["sae"]) / "sae_weights.safetensors").stat().st_mtime_ns
              for r in records}  # fmt: skip
    again = fit_sae_frontier(run_dir, [HOOK], **KW)
    assert [r["mcc"] for r in again["records"]] == [r["mcc"] for r in records]
    for name, t in mtimes.items():
        assert (run.sae_dir(name) / "sae_weights.safetensors").stat().st_mtime_ns == t
    html = write_report(run_dir, max_sentences=0, max_features=2).read_text()
    assert "SAE L0 frontier" in html and "Chosen SAE" in html
    assert "matched true feature h" in html and "tree level" in html


def test_bad_arguments(run_dir):
    with pytest.raises(ValueError, match="backend"):
        fit_sae_frontier(run_dir, [HOOK], backend="dask", **KW)
    with pytest.raises(ValueError, match="eval_fraction"):
        fit_sae_frontier(run_dir, [HOOK], eval_fraction=1.0, **KW)
    with pytest.raises(TypeError, match="FrontierSpec"):
        fit_sae_frontier(run_dir, [HOOK], **{**KW, "spec": {"d_sae": 4}})
