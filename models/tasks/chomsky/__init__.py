"""The Chomsky-hierarchy tasks of [Deletang2023], registered with the task registry (see
:mod:`.base` for layout, splits, metric).

Regular: ``parity_check``, ``even_pairs``, ``cycle_navigation``, ``modular_arithmetic``.
Deterministic context-free: ``reverse_string``, ``stack_manipulation``,
``modular_arithmetic_brackets``, ``solve_equation``.
Context-sensitive: ``duplicate_string``, ``missing_duplicate``, ``odds_first``,
``binary_addition``, ``bucket_sort``.
"""

from .base import BLANK, ChomskyTask, Drawn, accuracy_by_length
from .cs import BinaryAddition, BucketSort, DuplicateString, MissingDuplicate, OddsFirst
from .dcf import ModularArithmeticBrackets, ReverseString, SolveEquation, StackManipulation
from .regular import CycleNavigation, EvenPairs, ModularArithmetic, ParityCheck

CHOMSKY_TASKS: dict[str, tuple[str, ...]] = {
    "regular": ("parity_check", "even_pairs", "cycle_navigation", "modular_arithmetic"),
    "dcf": (
        "reverse_string",
        "stack_manipulation",
        "modular_arithmetic_brackets",
        "solve_equation",
    ),
    "cs": ("duplicate_string", "missing_duplicate", "odds_first", "binary_addition", "bucket_sort"),
}

__all__ = [
    "BLANK",
    "CHOMSKY_TASKS",
    "BinaryAddition",
    "BucketSort",
    "ChomskyTask",
    "CycleNavigation",
    "Drawn",
    "DuplicateString",
    "EvenPairs",
    "MissingDuplicate",
    "ModularArithmetic",
    "ModularArithmeticBrackets",
    "OddsFirst",
    "ParityCheck",
    "ReverseString",
    "SolveEquation",
    "StackManipulation",
    "accuracy_by_length",
]
