"""The tasks' high-level causal models: variables, counterfactual outputs, minimal pairs.

``causal_model(task)`` gives a task's :class:`CausalModel` (its ``variables``, inputs with
their query positions, outputs and values, counterfactual outputs);
``minimal_pairs(task, variable, n)`` draws seeded pairs that differ in one variable only.
Registered: Dyck (``depth``, ``stack_top``), question formation (``main_aux``,
``subject_extent``), tense inflection (``subject_number``, ``attractor_number``),
hierarchical filtering (``node_h{h}_i{i}``), stack manipulation (``stack_top``), reverse and
duplicate string (``head_symbol``). See :mod:`.base` for adding a task's variables.
"""

from .base import CausalInput, CausalModel, causal_model, list_causal_tasks, register_causal_model
from .chomsky import (
    DuplicateStringVariables,
    ReverseStringVariables,
    StackManipulationVariables,
)
from .dyck import DyckVariables
from .filtering import FilteringVariables
from .pairs import MinimalPairs, minimal_pairs, pairs_from_inputs
from .sentences import QuestionFormationVariables, TenseInflectionVariables

__all__ = [
    "CausalInput",
    "CausalModel",
    "DuplicateStringVariables",
    "DyckVariables",
    "FilteringVariables",
    "MinimalPairs",
    "QuestionFormationVariables",
    "ReverseStringVariables",
    "StackManipulationVariables",
    "TenseInflectionVariables",
    "causal_model",
    "list_causal_tasks",
    "minimal_pairs",
    "pairs_from_inputs",
    "register_causal_model",
]
