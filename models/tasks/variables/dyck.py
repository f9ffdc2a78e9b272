"""The causal model of Dyck-(k, d): a stack of open bracket types and a pointer into it.

Inputs are prefixes ``<bos> b_1 .. b_t`` of the task's strings with at least one bracket
open after ``b_t``; the query is the last position and the output the closing bracket the
string must continue with, i.e. the closer of the top of the stack. Variables:

- ``stack_top``: the type of the innermost open bracket. Setting it from a source input makes
  the output the closer of the source's top.
- ``depth``: the number of open brackets, read as the pointer to the stack cell the next
  closer matches. Setting it to the source's depth ``d'`` (``1 <= d' <= d``) makes the
  output the closer of the base's ``d'``-th open bracket (counted from the outermost): what
  the base string would need after closing ``d - d'`` more brackets.

With ``after="close"`` (the default) prefixes end with a closing bracket, so neither
variable can be read off the last token; ``after="any"`` allows every prefix.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..dyck import DyckTask
from .base import CausalInput, CausalModel, register_causal_model

_AFTER = ("close", "any")


def parse_prefix(task: DyckTask, tokens: tuple[int, ...]) -> tuple[list[int], list[int]]:
    """The open-bracket stack of a prefix ``<bos> b_1 .. b_t``: types and positions,
    outermost first (a ``ValueError`` for a closer that matches no open bracket)."""
    types: list[int] = []
    where: list[int] = []
    c0 = 3 + task.n_types
    for pos, tok in enumerate(tokens):
        if pos == 0:
            continue
        if 3 <= tok < c0:
            types.append(tok - 3)
            where.append(pos)
        elif c0 <= tok < c0 + task.n_types:
            if not types or types[-1] != tok - c0:
                raise ValueError(f"bracket at position {pos} closes nothing open")
            types.pop()
            where.pop()
        else:
            raise ValueError(f"token {tok} at position {pos} is not a bracket")
    return types, where


@register_causal_model
class DyckVariables(CausalModel):
    """Causal model of :class:`~hierlens.models.tasks.DyckTask` (see the module docstring).

    Parameters:
        after: "close" (prefixes end with a closing bracket) or "any".
    """

    task_name = "dyck"

    def __init__(self, task: DyckTask, after: str = "close") -> None:
        super().__init__(task)
        if after not in _AFTER:
            raise ValueError(f"after must be one of {', '.join(_AFTER)}, got {after!r}")
        self.after = after

    @property
    def variables(self) -> Mapping[str, str]:
        return {
            "depth": "number of open brackets (the stack pointer the next closer reads)",
            "stack_top": "type of the innermost open bracket (top of the stack)",
        }

    def closer(self, kind: int) -> int:
        return 3 + self.task.n_types + kind

    def make(self, tokens: tuple[int, ...]) -> CausalInput:
        """The causal input of a prefix (its stack parsed from the tokens)."""
        types, where = parse_prefix(self.task, tokens)
        if not types:
            raise ValueError("a Dyck causal input needs at least one open bracket")
        return CausalInput(
            tokens=tuple(tokens),
            query=len(tokens) - 1,
            output=self.closer(types[-1]),
            values={"depth": len(types), "stack_top": types[-1]},
            state=(tuple(types), tuple(where)),
        )

    def draw(self, n: int, split: str, rng: np.random.Generator) -> list[CausalInput]:
        seed = int(rng.integers(0, 2**31))
        out: list[CausalInput] = []
        c0 = 3 + self.task.n_types
        for ex in self.task.sample(max(n // 4, 16), split, seed):
            tokens = ex.tokens[:-1]  # drop <eos>
            cuts = []
            depth = 0
            for t in range(1, len(tokens)):
                depth += -1 if tokens[t] >= c0 else 1
                if depth >= 1 and (self.after == "any" or tokens[t] >= c0):
                    cuts.append(t)
            for t in cuts:
                out.append(self.make(tokens[: t + 1]))
        order = rng.permutation(len(out))
        picked = [out[i] for i in order[:n]]
        if len(picked) < n:
            picked += self.draw(n - len(picked), split, rng)
        return picked

    def candidates(self, inp: CausalInput) -> tuple[int, ...]:
        return tuple(self.closer(k) for k in range(self.task.n_types))

    def counterfactual(self, base: CausalInput, source: CausalInput, variable: str) -> int | None:
        self.check_variable(variable)
        types = base.state[0]
        if variable == "stack_top":
            return self.closer(source.values["stack_top"])
        d = source.values["depth"]
        if not 1 <= d <= len(types):
            return None
        return self.closer(types[d - 1])

    def regenerate(
        self, inp: CausalInput, variable: str, value: int, rng: np.random.Generator
    ) -> CausalInput | None:
        self.check_variable(variable)
        types, where = inp.state
        tokens = list(inp.tokens)
        if variable == "stack_top":
            if not 0 <= value < self.task.n_types:
                return None
            tokens[where[-1]] = 3 + value  # retype the innermost open bracket
            return self.make(tuple(tokens))
        if not 1 <= value <= len(types):
            return None
        for kind in reversed(types[value:]):  # close the brackets above the new depth
            tokens.append(self.closer(kind))
        return self.make(tuple(tokens))
