"""hierlens.analysis: tree projections and scores, grokking tracking, depth sweeps, the
pipeline, reports, paper figures and the CLI.

Rooms: :mod:`.trees` (span scores, tree decoding, tree metrics; imports only
:mod:`hierlens.models`), :mod:`.compare` (CKA and other similarities, unit matching, SAE
geometry, rank collapse, comparing runs), :mod:`.report`, :mod:`.figures`, :mod:`.cli`; beside them
:mod:`.grokking` (tracking over checkpoints), :mod:`.sweep` and :mod:`.pipeline`.

Names are imported on first use, so ``hierlens --help`` stays fast:
``from hierlens.analysis import span_scores, tree_projection`` gives the two functions.
"""

from __future__ import annotations

import importlib
from typing import Any

from hierlens.models.moved import alias_moved_modules

_EXPORTS = {
    "span_scores": "trees",
    "tree_projection": "trees",
    "tree_splits": "trees",
    "constituent_score": "trees",
    "tree_score": "trees",
    "sentence_tree_score": "trees",
    "parse_f1": "trees",
    "parse_prf": "trees",
    "left_branching": "trees",
    "right_branching": "trees",
    "random_tree": "trees",
    "baseline_parse_f1": "trees",
    "similarity_matrix": "compare",
    "linear_cka": "compare",
    "rbf_cka": "compare",
    "svcca": "compare",
    "pwcca": "compare",
    "procrustes_distance": "compare",
    "unit_correlations": "compare",
    "best_match": "compare",
    "hungarian_match": "compare",
    "rosetta_sets": "compare",
    "localization_summary": "compare",
    "decoder_rows": "compare",
    "eigen_spectrum": "compare",
    "power_law_slope": "compare",
    "clustering_entropy": "compare",
    "difference_clusters": "compare",
    "parallelogram_quality": "compare",
    "lobe_alignment": "compare",
    "rank_residual": "compare",
    "rank_collapse": "compare",
    "compare_runs": "compare",
    "track": "grokking",
    "grokking_summary": "grokking",
    "sweep": "sweep",
    "run": "pipeline",
    "load_config": "pipeline",
    "PipelineConfig": "pipeline",
    "DEMO_CONFIG": "pipeline",
    "write_report": "report",
    "reproduce": "figures",
}

__all__ = sorted(_EXPORTS)

# modules of the flat 0.1 layout -> their rooms (old paths warn for one release)
alias_moved_modules(
    __name__,
    {
        "tree_projection": f"{__name__}.trees.spans",
        "tree_decode": f"{__name__}.trees.decode",
        "tree_metrics": f"{__name__}.trees.metrics",
        "block_runner": f"{__name__}.trees.block_runner",
        "report_html": f"{__name__}.report.html",
        "report_saes": f"{__name__}.report.saes",
        "report_sections": f"{__name__}.report.sections",
        "figures_experiments": f"{__name__}.figures.experiments",
        "figures_plot": f"{__name__}.figures.plot",
        "figures_settings": f"{__name__}.figures.settings",
        "figures_training": f"{__name__}.figures.training",
        "cli_capture": f"{__name__}.cli.capture",
        "cli_figures": f"{__name__}.cli.figures",
        "cli_probe": f"{__name__}.cli.probe",
        "cli_sae": f"{__name__}.cli.sae",
        "cli_tree": f"{__name__}.cli.tree",
    },
    callable_attrs={"tree_projection": "tree_projection"},
)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hierlens.analysis' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
