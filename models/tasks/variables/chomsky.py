"""Causal models of the Chomsky-hierarchy tasks with a stack or a tape.

The query is the first output position (the first blank after the input and any
computation steps); inputs keep all their tokens (the tasks are read by bidirectional or
recurrent models).

- ``stack_manipulation``: ``stack_top``, the symbol on top of the final stack (0 or 1; 2 when
  the stack ends empty and the output starts with ``<end>``). Setting it from a source makes
  the first output the source's top. Regenerating rewrites the push (or initial stack
  symbol) that put the final top there and re-executes the actions.
- ``reverse_string`` and ``duplicate_string``: ``head_symbol``, the input symbol the first
  output copies (the last input symbol for reverse, the first for duplicate): where a tape
  machine's head reads when it starts writing.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping

import numpy as np

from ..chomsky.base import ChomskyTask, Drawn
from .base import CausalInput, CausalModel, register_causal_model


def run_stack(inputs: list[str]) -> tuple[list[str], list[int]]:
    """Execute a stack-manipulation input: the final stack (top first) and, for each
    symbol on it, the input position that pushed it."""
    stack: list[tuple[str, int]] = []
    for t, sym in enumerate(inputs):
        if sym == "POP":
            if stack:
                stack.pop()
        else:
            stack.append((sym[-1], t))
    return [s for s, _ in reversed(stack)], [t for _, t in reversed(stack)]


class _ChomskyVariables(CausalModel):
    """Shared part: inputs are the task's examples, the query the first output position."""

    variable_name = ""

    def _input(self, inputs: list[str], outputs: list[str], value: int) -> CausalInput:
        task: ChomskyTask = self.task  # type: ignore[assignment]
        ex = task.make_example(Drawn(inputs, outputs))
        query = len(ex.tokens) - task.output_length(len(inputs))
        return CausalInput(
            tokens=ex.tokens,
            query=query,
            output=ex.targets[query],
            values={self.variable_name: value},
            state=list(inputs),
        )

    def draw(self, n: int, split: str, rng: np.random.Generator) -> list[CausalInput]:
        seed = int(rng.integers(0, 2**31))
        out = []
        for ex in self.task.sample(n, split, seed):
            L = int(ex.labels["length"])
            inputs = self.task.decode(ex.tokens[:L])
            out.append(self.make(inputs))
        return out

    @abc.abstractmethod
    def make(self, inputs: list[str]) -> CausalInput:
        """The causal input of the input symbols ``inputs`` (their outputs and the value)."""

    def candidates(self, inp: CausalInput) -> tuple[int, ...]:
        return tuple(int(i) for i in self.task.output_ids)  # type: ignore[attr-defined]


@register_causal_model
class StackManipulationVariables(_ChomskyVariables):
    """Causal model of :class:`~hierlens.models.tasks.chomsky.StackManipulation`."""

    task_name = "stack_manipulation"
    variable_name = "stack_top"

    @property
    def variables(self) -> Mapping[str, str]:
        return {"stack_top": "symbol on top of the final stack (2: empty stack)"}

    def make(self, inputs: list[str]) -> CausalInput:
        final, _ = run_stack(inputs)
        outputs = final + ["<end>"] + ["0"] * (len(inputs) - len(final))
        return self._input(inputs, outputs, int(final[0]) if final else 2)

    def counterfactual(self, base: CausalInput, source: CausalInput, variable: str) -> int | None:
        self.check_variable(variable)
        value = source.values["stack_top"]
        return self.task.token_id("<end>" if value == 2 else str(value))

    def regenerate(
        self, inp: CausalInput, variable: str, value: int, rng: np.random.Generator
    ) -> CausalInput | None:
        self.check_variable(variable)
        final, pushed_at = run_stack(inp.state)
        if value not in (0, 1) or not final:
            return None
        inputs = list(inp.state)
        t = pushed_at[0]
        inputs[t] = str(value) if inputs[t] in ("0", "1") else f"PUSH{value}"
        return self.make(inputs)


class _CopyVariables(_ChomskyVariables):
    variable_name = "head_symbol"
    #: index of the input symbol the first output copies (Python index)
    head: int = 0

    @property
    def variables(self) -> Mapping[str, str]:
        return {"head_symbol": "the input symbol the first output copies"}

    @abc.abstractmethod
    def outputs(self, inputs: list[str]) -> list[str]:
        """The task's output symbols for the input symbols ``inputs``."""

    def make(self, inputs: list[str]) -> CausalInput:
        return self._input(inputs, self.outputs(inputs), int(inputs[self.head]))

    def counterfactual(self, base: CausalInput, source: CausalInput, variable: str) -> int | None:
        self.check_variable(variable)
        return self.task.token_id(str(source.values["head_symbol"]))

    def regenerate(
        self, inp: CausalInput, variable: str, value: int, rng: np.random.Generator
    ) -> CausalInput | None:
        self.check_variable(variable)
        if value not in (0, 1):
            return None
        inputs = list(inp.state)
        inputs[self.head] = str(value)
        return self.make(inputs)


@register_causal_model
class ReverseStringVariables(_CopyVariables):
    """Causal model of :class:`~hierlens.models.tasks.chomsky.ReverseString`."""

    task_name = "reverse_string"
    head = -1

    def outputs(self, inputs: list[str]) -> list[str]:
        return inputs[::-1]


@register_causal_model
class DuplicateStringVariables(_CopyVariables):
    """Causal model of :class:`~hierlens.models.tasks.chomsky.DuplicateString`."""

    task_name = "duplicate_string"
    head = 0

    def outputs(self, inputs: list[str]) -> list[str]:
        return inputs + inputs
