"""IIA agrees with pyvene's interchange interventions on a shared case (skipped when pyvene
is not installed; it is not a dependency of hierlens)."""

from __future__ import annotations

import types

import pytest
import torch

from hierlens.analysis.causal.alignment import random_basis
from hierlens.analysis.causal.interchange import Alignment, interchange_accuracy
from hierlens.analysis.causal.planted import PlantedModel, planted_pairs


def test_iia_agrees_with_pyvene():
    pv = pytest.importorskip("pyvene")
    from pyvene.models.constants import CONST_OUTPUT_HOOK
    from pyvene.models.intervenable_modelcard import (
        type_to_dimension_mapping,
        type_to_module_mapping,
    )

    class Planted(PlantedModel):  # pyvene reads .config and .device of the model
        device = torch.device("cpu")

    type_to_module_mapping[Planted] = {"mid": ("hook_mid", CONST_OUTPUT_HOOK)}
    type_to_dimension_mapping[Planted] = {"mid": ("d",)}
    model = Planted()
    model.config = types.SimpleNamespace(d=8)
    pairs = planted_pairs(model, 60, seed=2)
    q, B = int(pairs.base_query[0]), len(pairs)
    for basis in (None, random_basis(8, 1, 0), random_basis(8, 2, 1), random_basis(8, 3, 2)):
        if basis is None:
            rep = pv.RepresentationConfig(0, "mid", "pos", 1)
            kind = pv.VanillaIntervention
        else:
            rep = pv.RepresentationConfig(0, "mid", "pos", 1, low_rank_dimension=basis.shape[0])
            kind = pv.LowRankRotatedSpaceIntervention
        pvm = pv.IntervenableModel(
            pv.IntervenableConfig(representations=[rep], intervention_types=kind), model=model
        )
        if basis is not None:
            (iv,) = pvm.interventions.values()
            iv = iv[0] if isinstance(iv, tuple) else iv
            with torch.no_grad():
                iv.rotate_layer.weight = basis.T.contiguous()  # pyvene's x R, R = basis^T
        with torch.no_grad():
            _, out = pvm({"tokens": pairs.base}, [{"tokens": pairs.source}],
                         {"sources->base": ([[[q]] * B], [[[q]] * B])})  # fmt: skip
        theirs = (out[:, q, :3].argmax(-1) == pairs.counterfactual).double().mean().item()
        ours = interchange_accuracy(model, pairs, Alignment("hook_mid", "query", basis))[0]
        assert ours == pytest.approx(theirs, abs=1e-9)
