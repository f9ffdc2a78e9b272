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
    clustering_entropy,
    cooccurrence,
    decoder_rows,
    difference_clusters,
    eigen_spectrum,
    lda_directions,
    lobe_alignment,
    parallelogram_quality,
    power_law_slope,
    project_out,
    spectral_clusters,
)
from .matching import (
    BestMatch,
    RosettaSet,
    best_match,
    hungarian_match,
    localization_summary,
    rosetta_sets,
    unit_correlations,
)
from .rank_collapse import rank_collapse, rank_residual
from .runs import compare_runs, layer_activations, layer_hooks, rank_collapse_by_layer
from .similarity import (
    MEASURES,
    hsic,
    linear_cka,
    procrustes_distance,
    pwcca,
    rbf_cka,
    rbf_kernel,
    similarity_matrix,
    svcca,
)
from .stats import MomentStats

__all__ = [
    "MEASURES",
    "BestMatch",
    "LobeAlignment",
    "MomentStats",
    "RosettaSet",
    "best_match",
    "clustering_entropy",
    "compare_runs",
    "cooccurrence",
    "decoder_rows",
    "difference_clusters",
    "eigen_spectrum",
    "hsic",
    "hungarian_match",
    "layer_activations",
    "layer_hooks",
    "lda_directions",
    "linear_cka",
    "lobe_alignment",
    "localization_summary",
    "parallelogram_quality",
    "power_law_slope",
    "procrustes_distance",
    "project_out",
    "pwcca",
    "rank_collapse",
    "rank_collapse_by_layer",
    "rank_residual",
    "rbf_cka",
    "rbf_kernel",
    "rosetta_sets",
    "similarity_matrix",
    "spectral_clusters",
    "svcca",
    "unit_correlations",
]
