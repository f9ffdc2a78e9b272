"""hierlens.analysis: tree projections and scores, grokking tracking, depth sweeps, the
pipeline, reports and the CLI.

Names are imported on first use, so ``hierlens --help`` stays fast. The decoder
``tree_projection(scores, method)`` is imported from :mod:`hierlens.analysis.tree_projection`
(the package attribute of that name is the submodule).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "span_scores": "tree_projection",
    "tree_splits": "tree_decode",
    "constituent_score": "tree_decode",
    "tree_score": "tree_metrics",
    "sentence_tree_score": "tree_metrics",
    "parse_f1": "tree_metrics",
    "parse_prf": "tree_metrics",
    "left_branching": "tree_metrics",
    "right_branching": "tree_metrics",
    "random_tree": "tree_metrics",
    "baseline_parse_f1": "tree_metrics",
    "track": "grokking",
    "grokking_summary": "grokking",
    "sweep": "sweep",
    "run": "pipeline",
    "load_config": "pipeline",
    "PipelineConfig": "pipeline",
    "DEMO_CONFIG": "pipeline",
    "write_report": "report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hierlens.analysis' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
