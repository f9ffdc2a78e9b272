"""Paper figures: the registry and :func:`reproduce` (:mod:`.reproduce`), the figures' full
and quick settings (:mod:`.settings`), their data functions (:mod:`.training`,
:mod:`.experiments`, :mod:`.structural`) and pure plotting functions (:mod:`.plot`)."""

from .reproduce import FIGURES, FigureSpec, describe, redraw, reproduce
from .results_page import results_page, write_results_page
from .settings import (
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
    STRUCTURAL_FULL,
    STRUCTURAL_QUICK,
)

__all__ = [
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
    "describe",
    "redraw",
    "reproduce",
    "results_page",
    "write_results_page",
]
