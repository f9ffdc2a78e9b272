"""Paper figures: the registry and :func:`reproduce` (:mod:`.reproduce`), the figures' full
and quick settings (:mod:`.settings`), their data functions (:mod:`.training`,
:mod:`.experiments`, :mod:`.structural`, :mod:`.correlation`, :mod:`.representations`) and pure
plotting functions (:mod:`.plot`, :mod:`.plot_representations`)."""

from .reproduce import FIGURES, FigureSpec, describe, redraw, reproduce
from .results_page import results_page, write_results_page
from .settings import (
    CKA_FULL,
    CKA_QUICK,
    CONCEPTS_FULL,
    CONCEPTS_QUICK,
    DEPTH_FULL,
    DEPTH_QUICK,
    FILTERING_FULL,
    FILTERING_QUICK,
    GROKKING_FULL,
    GROKKING_QUICK,
    MDL_FULL,
    MDL_QUICK,
    PROBING_FULL,
    PROBING_QUICK,
    RANK_FULL,
    RANK_QUICK,
    SAE_GEOMETRY_FULL,
    SAE_GEOMETRY_QUICK,
    STRUCTURAL_FULL,
    STRUCTURAL_QUICK,
)

__all__ = [
    "CKA_FULL",
    "CKA_QUICK",
    "CONCEPTS_FULL",
    "CONCEPTS_QUICK",
    "DEPTH_FULL",
    "DEPTH_QUICK",
    "FIGURES",
    "FILTERING_FULL",
    "FILTERING_QUICK",
    "FigureSpec",
    "GROKKING_FULL",
    "GROKKING_QUICK",
    "MDL_FULL",
    "MDL_QUICK",
    "PROBING_FULL",
    "PROBING_QUICK",
    "STRUCTURAL_FULL",
    "STRUCTURAL_QUICK",
    "RANK_FULL",
    "RANK_QUICK",
    "SAE_GEOMETRY_FULL",
    "SAE_GEOMETRY_QUICK",
    "describe",
    "redraw",
    "reproduce",
    "results_page",
    "write_results_page",
]
