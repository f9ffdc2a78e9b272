"""The synthetic-concepts reproduction script (examples/sae_concepts.py) at a tiny size."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from hierlens.models.tasks.concepts import HierarchicalConcepts

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sae_concepts.py"


def _load_example():
    spec = importlib.util.spec_from_file_location("sae_concepts_example", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_concepts_reproduction_tiny(tmp_path):
    ex = _load_example()
    concepts = HierarchicalConcepts(n_top=3, n_children=(2,), dim=12, seed=1)
    res = ex.run(concepts, k=2, n_train=600, n_eval=200, steps=40, batch_size=100, progress=False)
    assert set(res["methods"]) == {"MP-SAE", "TopK", "ReLU"}
    assert res["relu_l1_coefficient"] in ex.L1_SWEEP
    for name, m in res["methods"].items():
        assert set(m["per_level"]) == {"0", "1"}, name
        assert m["per_level"]["0"]["n"] == 3 and m["per_level"]["1"]["n"] == 6
        for v in m["per_level"].values():
            assert -1.0 <= v["hungarian_cosine"] <= v["mean_best_cosine"] + 1e-9 <= 1.0 + 1e-9
    assert res["methods"]["TopK"]["l0"] == pytest.approx(2.0)
    assert res["methods"]["MP-SAE"]["l0"] <= 2.0
    assert 0 < res["true_l0"] <= 2.0
    ex.plot(res, tmp_path / "fig.png")
    assert (tmp_path / "fig.png").stat().st_size > 1000
    json.dumps(res)
