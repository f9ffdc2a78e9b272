"""SAE evaluation results in SAEBench's layout: the core categories and metric names,
values against plain formulas, -1 where SAEBench writes NaN, the ground-truth evaluation,
and SAEBench's file naming."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hierlens.models.tasks.mpsae_toy import MPSAEToy
from hierlens.sae import ReluSAE, TopKSAE, evaluate_sae, ground_truth_recovery
from hierlens.sae.saebench import core_result, ground_truth_result, result_path, write_results

# SAEBench's core evaluation: categories and metric names (its evals/core/eval_output.py)
CORE_NAMES = {
    "model_behavior_preservation": {"kl_div_score", "kl_div_with_ablation", "kl_div_with_sae"},
    "model_performance_preservation": {"ce_loss_score", "ce_loss_with_ablation",
                                       "ce_loss_with_sae", "ce_loss_without_sae"},
    "reconstruction_quality": {"explained_variance", "explained_variance_legacy", "mse", "cossim"},
    "shrinkage": {"l2_norm_in", "l2_norm_out", "l2_ratio", "relative_reconstruction_bias"},
    "sparsity": {"l0", "l1"},
    "token_stats": {"total_tokens_eval_reconstruction", "total_tokens_eval_sparsity_variance"},
    "misc_metrics": {"freq_over_1_percent", "freq_over_10_percent",
                     "normalized_freq_over_1_percent", "normalized_freq_over_10_percent",
                     "average_max_encoder_cosine_sim", "average_max_decoder_cosine_sim",
                     "frac_alive"},
}  # fmt: skip
ENVELOPE = {"eval_type_id", "eval_config", "eval_id", "datetime_epoch_millis",
            "eval_result_metrics", "eval_result_details", "sae_bench_commit_hash",
            "sae_lens_id", "sae_lens_release_id", "sae_lens_version", "sae_cfg_dict",
            "eval_result_unstructured"}  # fmt: skip
DETAIL = {"index", "feature_density", "consistent_activation_heuristic", "encoder_bias",
          "encoder_norm", "encoder_decoder_cosine_sim", "max_decoder_cosine_sim",
          "max_encoder_cosine_sim"}  # fmt: skip


def test_core_layout_and_values_against_plain_formulas():
    x = torch.randn(300, 8, generator=torch.Generator().manual_seed(0))
    sae = TopKSAE(8, 16, k=3, device="cpu")
    res = core_result(sae, x, release="toy", sae_id="topk_w16_k3", batch_size=64)
    assert set(res) == ENVELOPE and res["eval_type_id"] == "core"
    m = res["eval_result_metrics"]
    assert {k: set(v) for k, v in m.items()} == CORE_NAMES
    assert [set(d) for d in res["eval_result_details"]] == [DETAIL] * 16
    xn = x.double().numpy()
    with torch.no_grad():
        codes = sae.encode(x).double().numpy()
        xh = sae.decode(torch.from_numpy(codes).float()).double().numpy()
    ev = evaluate_sae(sae, x)
    rq = m["reconstruction_quality"]
    assert rq["explained_variance"] == pytest.approx(1 - ev["fvu"], rel=1e-5)
    cos = (xn * xh).sum(1) / np.linalg.norm(xn, axis=1) / np.linalg.norm(xh, axis=1)
    assert rq["cossim"] == pytest.approx(cos.mean(), rel=1e-9)
    assert rq["mse"] == pytest.approx(((xn - xh) ** 2).sum(1).mean(), rel=1e-9)
    sh = m["shrinkage"]
    ratio = np.linalg.norm(xh, axis=1) / np.linalg.norm(xn, axis=1)
    assert sh["l2_ratio"] == pytest.approx(ratio.mean(), rel=1e-9)
    rrb = (np.linalg.norm(xh, axis=1) ** 2).mean() / (xn * xh).sum(1).mean()
    assert sh["relative_reconstruction_bias"] == pytest.approx(rrb, rel=1e-9)
    assert m["sparsity"]["l0"] == pytest.approx(3.0) and m["sparsity"]["l1"] == pytest.approx(
        codes.sum(1).mean(), rel=1e-9
    )
    density = (codes > 0).mean(0)
    assert m["misc_metrics"]["frac_alive"] == pytest.approx((density > 0).mean())
    assert [d["feature_density"] for d in res["eval_result_details"]] == pytest.approx(density)
    # no model: SAEBench's -1 for what needs one
    assert set(m["model_behavior_preservation"].values()) == {-1}
    assert set(m["model_performance_preservation"].values()) == {-1}


def test_core_with_spliced_ce():
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(1))
    sae = ReluSAE(4, 8, l1_coefficient=0.1, device="cpu")
    spliced = {"ce_clean": 1.0, "ce_spliced": 1.5, "ce_zero": 3.0, "kl_spliced": 0.25,
               "kl_zero": 1.0, "ce_loss_recovered": 0.75, "n_positions": 40}  # fmt: skip
    m = core_result(sae, x, release="r", sae_id="s", spliced=spliced)["eval_result_metrics"]
    assert m["model_behavior_preservation"] == {
        "kl_div_score": 0.75, "kl_div_with_ablation": 1.0, "kl_div_with_sae": 0.25
    }  # fmt: skip
    assert m["model_performance_preservation"] == {
        "ce_loss_score": 0.75, "ce_loss_with_ablation": 3.0, "ce_loss_with_sae": 1.5,
        "ce_loss_without_sae": 1.0,
    }  # fmt: skip
    assert m["token_stats"]["total_tokens_eval_reconstruction"] == 40


def test_ground_truth_result_and_files(tmp_path):
    toy = MPSAEToy()
    sample = toy.sample(500)
    truth = toy.ground_truth(sample)
    rec = ground_truth_recovery(truth.activations, truth)
    sae = TopKSAE(20, 20, k=2, device="cpu")
    res = ground_truth_result(sae, rec, release="mpsae toy/c0", sae_id="planted")
    m = res["eval_result_metrics"]
    assert m["matching"]["mcc"] == pytest.approx(1.0)
    assert m["absorption"] == {"mean_absorption_rate": 0.0, "absorption_rate_level_0": 0.0,
                               "absorption_rate_level_1": -1}  # fmt: skip
    assert len(res["eval_result_details"]) == 20
    core = core_result(sae, sample.x, release="mpsae toy/c0", sae_id="planted")
    paths = write_results(tmp_path, [res, core])
    assert paths == [
        tmp_path / "hierlens_ground_truth" / "mpsae toy_c0_planted_eval_results.json",
        tmp_path / "core" / "mpsae toy_c0_planted_eval_results.json",
    ]
    assert result_path(tmp_path, core) == paths[1]
    def no_nan(const):
        raise AssertionError(f"non-standard JSON constant {const}")

    back = json.loads(paths[0].read_text(), parse_constant=no_nan)  # SAEBench writes no NaN
    assert back["eval_result_metrics"]["absorption"]["absorption_rate_level_1"] == -1
    assert back["sae_cfg_dict"]["architecture"] == "topk"
    with pytest.raises(ValueError, match="ground_truth_recovery"):
        ground_truth_result(sae, {"mcc": 1.0}, release="r", sae_id="s")
