"""hierlens.analysis: tree projections and scores, grokking tracking, depth sweeps, the
pipeline, reports, paper figures and the CLI.

Rooms: :mod:`.trees` (span scores, tree decoding, tree metrics; imports only
:mod:`hierlens.models`), :mod:`.compare` (CKA and other similarities, unit matching, SAE
geometry, rank collapse, comparing runs), :mod:`.report`, :mod:`.figures`, :mod:`.pipeline`,
:mod:`.cli`; beside them :mod:`.grokking` (tracking over checkpoints) and :mod:`.sweep`.

The names below are this wing's public namespace (each has this one path; the rooms'
``__all__`` list the rest). They are imported on first use, so ``hierlens --help`` stays
fast: ``from hierlens.analysis import span_scores, tree_projection`` gives the two functions.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> the module (under this package) that defines it
_EXPORTS = {
    "span_scores": "trees.spans",
    "tree_projection": "trees.decode",
    "tree_splits": "trees.decode",
    "constituent_score": "trees.decode",
    "tree_score": "trees.metrics",
    "sentence_tree_score": "trees.metrics",
    "parse_f1": "trees.metrics",
    "parse_prf": "trees.metrics",
    "left_branching": "trees.metrics",
    "right_branching": "trees.metrics",
    "random_tree": "trees.metrics",
    "baseline_parse_f1": "trees.metrics",
    "similarity_matrix": "compare.similarity",
    "linear_cka": "compare.similarity",
    "rbf_cka": "compare.similarity",
    "svcca": "compare.similarity",
    "pwcca": "compare.similarity",
    "procrustes_distance": "compare.similarity",
    "unit_correlations": "compare.matching",
    "best_match": "compare.matching",
    "hungarian_match": "compare.matching",
    "rosetta_sets": "compare.matching",
    "localization_summary": "compare.matching",
    "decoder_rows": "compare.geometry",
    "eigen_spectrum": "compare.geometry",
    "power_law_slope": "compare.geometry",
    "clustering_entropy": "compare.geometry",
    "difference_clusters": "compare.geometry",
    "parallelogram_quality": "compare.geometry",
    "lobe_alignment": "compare.geometry",
    "rank_residual": "compare.rank_collapse",
    "rank_collapse": "compare.rank_collapse",
    "compare_runs": "compare.runs",
    "track": "grokking",
    "grokking_summary": "grokking",
    "write_report": "report.write",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hierlens.analysis' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
