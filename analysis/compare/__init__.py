"""Comparing representations and their geometry.

- :mod:`.similarity`: linear CKA (biased and debiased), RBF CKA, SVCCA, PWCCA and the
  Procrustes distance, as one layer-by-layer matrix streamed over store batches
  (:func:`similarity_matrix`);
- :mod:`.matching`: unit correlations, best and Hungarian matches, Rosetta sets across
  models, the localisation-vs-distribution summary;
- :mod:`.geometry`: crystals, lobes and galaxy of an SAE's decoder (Li et al. 2024);
- :mod:`.rank_collapse`: residual from token-uniform rank 1 per layer, with the
  pure-attention path decomposition [Dong2021];
- :mod:`.runs`: checkpoints and runs on the same sentences (:func:`compare_runs`, the
  per-layer helpers ``track`` uses);
- :mod:`.stats`: sources and the streamed moment statistics they share.
"""

from .geometry import (
    LobeAlignment,
    cooccurrence,
    lda_directions,
    project_out,
    spectral_clusters,
)
from .matching import BestMatch, RosettaSet
from .runs import layer_activations, layer_hooks, rank_collapse_by_layer
from .similarity import MEASURES, hsic, rbf_kernel
from .stats import MomentStats

__all__ = [
    "MEASURES",
    "BestMatch",
    "LobeAlignment",
    "MomentStats",
    "RosettaSet",
    "cooccurrence",
    "hsic",
    "layer_activations",
    "layer_hooks",
    "lda_directions",
    "project_out",
    "rank_collapse_by_layer",
    "rbf_kernel",
    "spectral_clusters",
]
