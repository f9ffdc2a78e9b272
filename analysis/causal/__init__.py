"""Causal evidence for hierarchy: activation patching, attribution patching, interchange
interventions, distributed alignment search and interventions through SAEs and probes.

The variables, counterfactual outputs and minimal pairs of the tasks live with the tasks
(:mod:`hierlens.models.tasks.variables`); this room intervenes on models with them.
Names are imported on first use (``from hierlens.analysis.causal import das``), so the
command line stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Alignment": "interchange",
    "interchange_accuracy": "interchange",
    "DASConfig": "alignment",
    "DASResult": "alignment",
    "das": "alignment",
    "fit_subspaces": "alignment",
    "random_basis": "alignment",
    "PatchingResult": "patching",
    "activation_patching": "patching",
    "agreement": "attribution",
    "attribution_patching": "attribution",
    "das_with_controls": "controls",
    "probe_accuracy": "controls",
    "random_weights_copy": "controls",
    "inlp_directions": "features",
    "neuron_edit": "features",
    "projection_edit": "features",
    "sae_feature_edit": "features",
    "steering_edit": "features",
    "task_metric_under": "features",
    "PlantedModel": "planted",
    "planted_pairs": "planted",
    "editing_hooks": "sites",
    "forward_logits": "sites",
    "PatchConfig": "sweep",
    "causal_sweep": "sweep",
    "pairs_from_sentences": "text_pairs",
    "read_pair_file": "text_pairs",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
