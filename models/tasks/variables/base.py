"""High-level causal models of the tasks: their variables, values and counterfactual outputs.

A task's causal model (Geiger et al., "Causal Abstractions of Neural Networks", NeurIPS 2021;
"Finding Alignments Between Interpretable Causal Variables and Distributed Neural
Representations", CLeaR 2024) names the task's high-level variables and, for any input,

- the *query position*: the token position whose output the model's rule decides;
- the *output*: the token id the task's rule gives there;
- every variable's *value* (an integer);
- the *counterfactual output* when one variable of a *base* input is set to its value on a
  *source* input (an interchange intervention on the causal model), or ``None`` where the
  causal model leaves it undefined;
- where possible, the *regenerated* input: the base input rewritten so that the variable
  takes a given value, with its true output recomputed from the task's own rules. Tests
  check that counterfactuals equal the outputs of regenerated inputs.

Writing the variables of a new task: subclass :class:`CausalModel`, set ``task_name``,
implement :attr:`~CausalModel.variables`, :meth:`~CausalModel.draw`,
:meth:`~CausalModel.candidates` and :meth:`~CausalModel.counterfactual` (and
:meth:`~CausalModel.regenerate` where the task allows it), and decorate the class with
:func:`register_causal_model`. :func:`hierlens.models.tasks.variables.minimal_pairs` then
draws minimal pairs for every variable.
"""

from __future__ import annotations

import abc
import dataclasses
import difflib
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from hierlens.core.validate import check_int

from ..base import SPLITS, Task

__all__ = [
    "CausalInput",
    "CausalModel",
    "causal_model",
    "list_causal_tasks",
    "register_causal_model",
]


@dataclasses.dataclass(frozen=True)
class CausalInput:
    """One input of a task's causal model.

    Attributes:
        tokens: token ids ``(T,)``; for a next-token task they end at the query position.
        query: the position whose output the task's rule decides.
        output: the token id the task's rule gives at ``query``.
        values: every variable's value (an integer) on this input.
        state: the task's latent state the counterfactuals need (a stack, a tree, ...).
    """

    tokens: tuple[int, ...]
    query: int
    output: int
    values: Mapping[str, int]
    state: Any = dataclasses.field(default=None, compare=False, repr=False)

    def __len__(self) -> int:
        return len(self.tokens)


class CausalModel(abc.ABC):
    """The high-level causal model of one task (subclasses are registered per task name).

    ``null_variables`` are variables the task's rule ignores (the counterfactual output is
    the base output): their minimal pairs test that an intervention leaves the output alone.
    """

    task_name: ClassVar[str] = ""
    null_variables: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, task: Task) -> None:
        if not isinstance(task, Task) or task.name != self.task_name:
            raise TypeError(
                f"{type(self).__name__} models the {self.task_name!r} task, got "
                f"{getattr(task, 'name', type(task).__name__)!r}"
            )
        self.task = task

    @property
    @abc.abstractmethod
    def variables(self) -> Mapping[str, str]:
        """``{variable: description}`` of the task's high-level variables."""

    @abc.abstractmethod
    def draw(self, n: int, split: str, rng: np.random.Generator) -> list[CausalInput]:
        """``n`` random inputs of ``split`` (drawn from ``rng``)."""

    @abc.abstractmethod
    def candidates(self, inp: CausalInput) -> tuple[int, ...]:
        """The output token ids the task's metric ranks at the query (a fixed count per
        causal model); ``inp.output`` is among them."""

    @abc.abstractmethod
    def counterfactual(self, base: CausalInput, source: CausalInput, variable: str) -> int | None:
        """The output at ``base``'s query when ``variable`` takes its value on ``source``
        (``None`` where the causal model does not define it)."""

    def regenerate(
        self, inp: CausalInput, variable: str, value: int, rng: np.random.Generator
    ) -> CausalInput | None:
        """``inp`` rewritten so that ``variable`` takes ``value``, its output recomputed from
        the task's rules; ``None`` where no such input exists (the default)."""
        return None

    def held_fixed(self, variable: str) -> tuple[str, ...]:
        """The variables a minimal pair for ``variable`` agrees on: every other one, unless a
        task's variables depend on each other (then the ones the counterfactual reads)."""
        return tuple(v for v in self.variables if v != variable)

    @property
    def causal_task(self) -> bool:
        """Whether the task is read left to right (inputs end at their query position)."""
        return self.task.objective == "next_token"

    def check_variable(self, variable: str) -> None:
        """A ``ValueError`` naming the task's variables unless ``variable`` is one."""
        if not isinstance(variable, str):
            raise TypeError(f"variable must be a string, got {type(variable).__name__}")
        names = list(self.variables)
        if variable not in names:
            close = difflib.get_close_matches(variable, names, n=3)
            hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
            raise ValueError(
                f"the {self.task_name} task has no variable {variable!r}{hint}; "
                f"its variables: {', '.join(names)}"
            )

    def inputs(self, n: int, split: str = "test_id", seed: int = 0) -> list[CausalInput]:
        """``n`` inputs of ``split``, a deterministic function of ``(task, n, split, seed)``."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        check_int("n", n, numpy=True)
        rng = np.random.default_rng([int(seed), SPLITS.index(split), 0xCA5])
        return self.draw(int(n), split, rng)


_MODELS: dict[str, type[CausalModel]] = {}


def register_causal_model(cls: type[CausalModel]) -> type[CausalModel]:
    """Class decorator registering a :class:`CausalModel` under its ``task_name``."""
    if not cls.task_name:
        raise ValueError(f"{cls.__name__} sets no task_name")
    if cls.task_name in _MODELS and _MODELS[cls.task_name] is not cls:
        raise ValueError(f"a causal model of {cls.task_name!r} is already registered")
    _MODELS[cls.task_name] = cls
    return cls


def list_causal_tasks() -> list[str]:
    """Names of the tasks that have a causal model, sorted."""
    return sorted(_MODELS)


def causal_model(task: Task, **options: Any) -> CausalModel:
    """The causal model of ``task`` (``options`` go to its constructor)."""
    if not isinstance(task, Task):
        raise TypeError(f"task must be a hierlens Task, got {type(task).__name__}")
    cls = _MODELS.get(task.name)
    if cls is None:
        raise ValueError(
            f"the {task.name!r} task has no causal model; tasks with one: "
            f"{', '.join(list_causal_tasks())} (see hierlens.models.tasks.variables to add one)"
        )
    return cls(task, **options)
