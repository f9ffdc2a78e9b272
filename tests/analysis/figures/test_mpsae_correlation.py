"""The mpsae-correlation figure at its --quick setting, the absorption measure on a
hand-built case, and the results page regenerated from the committed JSON."""

import math
from pathlib import Path

import pytest
import torch

from hierlens.analysis.figures import FIGURES, reproduce, results_page
from hierlens.analysis.figures.correlation import METHODS, absorption_rates

DOCS = Path(__file__).resolve().parents[3] / "docs"


def test_quick_figure(tmp_path):
    paths = reproduce("mpsae-correlation", tmp_path, quick=True, device="cpu", progress=False)
    assert [p.name for p in paths] == [
        "mpsae-correlation.json", "mpsae-correlation.png", "mpsae-correlation.pdf"
    ]  # fmt: skip
    import json

    data = json.loads(paths[0].read_text())["data"]
    quick = FIGURES["mpsae-correlation"].quick
    assert data["cosines"] == quick["cosines"] and data["methods"] == list(METHODS)
    assert len(data["rows"]) == len(quick["cosines"]) * len(quick["seeds"]) * len(METHODS)
    for r in data["rows"]:
        assert -1.0 <= r["child_hungarian"] <= r["child_best"] + 1e-9 <= 1.0 + 1e-9
        assert r["fvu"] >= 0.0 and r["l0"] > 0
        assert math.isnan(r["absorption"]) or 0.0 <= r["absorption"] <= 1.0
    bt = [r["l0"] for r in data["rows"] if r["method"] in ("BatchTopK", "Matryoshka")]
    assert all(0.3 < v < 4.0 for v in bt)


def test_absorption_counts_hand_built_codes():
    # features: 0 parent, 1 child of 0; latents: 0 = parent, 1 = child+parent (absorbing)
    directions = torch.eye(2, dtype=torch.float64)
    W_dec = torch.tensor([[1.0, 0.0], [0.7071, 0.7071]], dtype=torch.float64)
    true = torch.tensor([[1.5, 1.5], [1.5, 1.5], [1.5, 1.5], [1.5, 0.0]], dtype=torch.float64)
    codes = torch.tensor(
        [[0.0, 2.1], [1.5, 1.5], [0.0, 0.1], [0.0, 0.0]], dtype=torch.float64
    )  # row 0 absorbed; row 1 fine; row 2 missed but not carried; row 3 missed alone
    out = absorption_rates(codes, W_dec, true, directions, {0: 0}, {0: [1]})
    assert out["absorption"] == pytest.approx(1 / 3)
    assert out["parent_miss_with_child"] == pytest.approx(2 / 3)
    assert out["parent_miss_alone"] == pytest.approx(1.0)


def test_results_page_regenerates_identically():
    committed = (DOCS / "results.md").read_text(encoding="utf-8")
    assert results_page(DOCS) == committed
    assert "| Costa et al. 2025 (MP-SAE) |" in committed
