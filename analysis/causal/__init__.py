"""Causal evidence for hierarchy: activation patching, attribution patching, interchange
interventions, distributed alignment search and interventions through SAEs and probes.

The variables, counterfactual outputs and minimal pairs of the tasks live with the tasks
(:mod:`hierlens.models.tasks.variables`); this room intervenes on models with them.
"""

from .attribution import agreement, attribution_patching
from .controls import das_with_controls, probe_accuracy, random_weights_copy
from .das import DASConfig, DASResult, das, fit_subspaces, random_basis
from .features import (
    inlp_directions,
    neuron_edit,
    projection_edit,
    sae_feature_edit,
    steering_edit,
    task_metric_under,
)
from .interchange import Alignment, interchange_accuracy
from .patching import PatchingResult, activation_patching
from .planted import PlantedModel, planted_pairs
from .sites import editing_hooks, forward_logits

__all__ = [
    "Alignment",
    "DASConfig",
    "DASResult",
    "PatchingResult",
    "PlantedModel",
    "activation_patching",
    "agreement",
    "attribution_patching",
    "das",
    "das_with_controls",
    "inlp_directions",
    "neuron_edit",
    "probe_accuracy",
    "projection_edit",
    "random_weights_copy",
    "sae_feature_edit",
    "steering_edit",
    "task_metric_under",
    "editing_hooks",
    "fit_subspaces",
    "forward_logits",
    "interchange_accuracy",
    "planted_pairs",
    "random_basis",
]
