"""The sae-frontier figure: a tiny run through ``reproduce`` (every architecture at every
sparsity on the toy and on hierarchical-filtering activations, with spliced CE), the claims
it condenses, and the results-page rows built from them."""

from __future__ import annotations

import json
import math

from hierlens.analysis.figures import reproduce
from hierlens.analysis.figures.frontier import frontier_claims
from hierlens.analysis.figures.results_page import _frontier_rows
from hierlens.sae import SAE

ARCHS = list(SAE.registry)


def _record(arch, value, l0, absorption, child_mcc=0.5):
    level = {"0": {"absorption": absorption, "mcc": 0.6, "mean_f1": 0.6},
             "1": {"absorption": float("nan"), "mcc": child_mcc, "mean_f1": child_mcc}}  # fmt: skip
    return {"name": f"{arch}_{value}", "architecture": arch, "value": value, "l0": l0,
            "fvu": 0.1 / l0, "mcc": 0.5, "mean_f1": 0.5, "absorption": absorption,
            "per_level": level}  # fmt: skip


def hand_made_frontier() -> dict:
    ks = [1, 2, 4, 8]
    recs = []
    for arch in ARCHS:
        for i, k in enumerate(ks):
            absorb = 0.1 if arch == "mp" else (0.2 if arch == "matryoshka_batchtopk" else 0.3)
            recs.append(_record(arch, k, float(k) + 0.01 * i, absorb, 0.9 if arch == "mp" else 0.4))
    data = {
        "spec": {"d_sae": 20, "ks": ks},
        "toy": {"cosines": [0.8], "true_l0": 1.36, "records": [recs]},
        "filtering": {"records": [dict(r, ce_loss_recovered=0.9) for r in recs]},
    }
    data["claims"] = frontier_claims(data)
    return data


def test_claims_and_rows_from_hand_made_records():
    data = hand_made_frontier()
    costa = data["claims"]["costa"][0]["architectures"]
    # the point with the smallest L0 >= 1.36 is k = 2 for every architecture
    assert all(v["l0"] == 2.01 for v in costa.values())
    assert costa["mp"]["child_mcc"] == 0.9 and costa["topk"]["parent_absorption"] == 0.3
    rec = {"quick": False, "settings": {"toy": {"steps": 5000}}, "data": data}
    data["filtering"].update(task={"q": 4, "depth": 4}, d_sae=64, model_accuracy=0.9,
                             model={"n_layers": 2, "d_model": 32, "steps": 10})  # fmt: skip
    costa_row, matry_row = _frontier_rows(rec)
    assert costa_row["verdict"].startswith("reproduced")
    assert matry_row["verdict"].startswith("reproduced: Matryoshka absorbs less at every k")
    # flip: Matryoshka absorbs more everywhere
    for recs in (data["toy"]["records"][0], data["filtering"]["records"]):
        for r in recs:
            if r["architecture"] == "matryoshka_batchtopk":
                r["absorption"] = 0.9
    data["claims"] = frontier_claims(data)
    assert _frontier_rows(rec)[1]["verdict"].startswith("not reproduced")
    assert [r["verdict"] for r in _frontier_rows(None)] == ["not run (no sae-frontier.json)"] * 2


def test_tiny_frontier_figure(tmp_path):
    tiny = {
        "toy": {"n_train": 400, "n_eval": 300, "steps": 10, "batch_size": 100, "lr": 1e-2},
        "filtering": {
            "task_params": {"q": 3, "depth": 2},
            "model": {"d_model": 16, "n_layers": 1, "n_heads": 2},
            "model_steps": 5, "n_train": 60, "n_eval": 40, "steps": 10, "batch_size": 64,
            "lr": 1e-2, "d_sae": 16,
        },
    }  # fmt: skip
    paths = reproduce("sae-frontier", tmp_path, quick=True, device="cpu", progress=False, **tiny)
    assert [p.name for p in paths] == ["sae-frontier.json", "sae-frontier.png", "sae-frontier.pdf"]
    data = json.loads(paths[0].read_text())["data"]
    for records in (*data["toy"]["records"], data["filtering"]["records"]):
        assert len(records) == 4 * len(ARCHS)
        for arch in ARCHS:
            l0s = [r["l0"] for r in records if r["architecture"] == arch]
            assert len(l0s) == 4 and all(math.isfinite(v) for v in l0s)
    for r in data["filtering"]["records"]:
        assert math.isfinite(r["ce_loss_recovered"]) and 0.0 <= r["mcc"] <= 1.0
    assert data["filtering"]["hook"] == "blocks.0.hook_resid_post"
    assert {d["dataset"] for d in data["claims"]["matryoshka"]} == {
        "toy cosine 0.8", "hierarchical filtering"
    }  # fmt: skip
