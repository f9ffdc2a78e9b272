"""Hierarchical tasks with gold trees: the task protocol, the registry and the tasks."""

from .base import (
    IGNORE_INDEX,
    SPLITS,
    Batch,
    gold_depths,
    iter_batches,
    pad_examples,
)
from .dyck import DyckTask
from .registry import register_task, task_class, task_parameters

__all__ = [
    "IGNORE_INDEX",
    "SPLITS",
    "Batch",
    "DyckTask",
    "gold_depths",
    "iter_batches",
    "pad_examples",
    "register_task",
    "task_class",
    "task_parameters",
]

# the hierarchical task suite
from .concepts import ConceptSample, ConceptTree, HierarchicalConcepts  # noqa: E402
from .hierarchical_filtering import HierarchicalFilteringTask  # noqa: E402
from .question_formation import QuestionFormationTask  # noqa: E402
from .tense_inflection import TenseInflectionTask  # noqa: E402
from .transduction import TransductionTask  # noqa: E402

__all__ += [
    "ConceptSample",
    "ConceptTree",
    "HierarchicalConcepts",
    "HierarchicalFilteringTask",
    "QuestionFormationTask",
    "TenseInflectionTask",
    "TransductionTask",
]

from . import chomsky  # noqa: E402,F401  (registers the Chomsky-hierarchy tasks)
