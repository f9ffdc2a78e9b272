"""Regular tasks of [Deletang2023].

Each is a classification: one output symbol written at the single blank after the input.
Gold tree: flat (no hierarchical structure).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from ..registry import register_task
from .base import ChomskyTask, Drawn, binary


@register_task
@dataclasses.dataclass(frozen=True)
class ParityCheck(ChomskyTask):
    """Parity check: is the number of 1s in a binary string even? Output ``even``/``odd``."""

    name: ClassVar[str] = "parity_check"
    description: ClassVar[str] = "Chomsky (regular): parity of the number of 1s in a binary string"
    level: ClassVar[str] = "regular"
    input_symbols: ClassVar[tuple[str, ...]] = ("0", "1")
    output_symbols: ClassVar[tuple[str, ...]] = ("even", "odd")

    def draw(self, length: int, rng: np.random.Generator) -> Drawn:
        s = binary(rng, length)
        return Drawn(s, ["odd" if s.count("1") % 2 else "even"])


@register_task
@dataclasses.dataclass(frozen=True)
class EvenPairs(ChomskyTask):
    """Even pairs: is the number of ``ab`` plus ``ba`` bigrams even? (Equivalently: first and
    last symbols are equal.) Output ``even``/``odd``."""

    name: ClassVar[str] = "even_pairs"
    description: ClassVar[str] = "Chomsky (regular): parity of the number of ab and ba pairs"
    level: ClassVar[str] = "regular"
    input_symbols: ClassVar[tuple[str, ...]] = ("a", "b")
    output_symbols: ClassVar[tuple[str, ...]] = ("even", "odd")

    def draw(self, length: int, rng: np.random.Generator) -> Drawn:
        s = ["ab"[int(b)] for b in rng.integers(0, 2, length)]
        return Drawn(s, ["even" if s[0] == s[-1] else "odd"])


@register_task
@dataclasses.dataclass(frozen=True)
class CycleNavigation(ChomskyTask):
    """Cycle navigation: start at 0 on a cycle of 5 states; each input moves
    ``+1``, ``-1`` or stays (``0``); output the final state (a digit)."""

    name: ClassVar[str] = "cycle_navigation"
    description: ClassVar[str] = "Chomsky (regular): final position after moves on a cycle"
    level: ClassVar[str] = "regular"
    input_symbols: ClassVar[tuple[str, ...]] = ("stay", "+1", "-1")
    output_symbols: ClassVar[tuple[str, ...]] = tuple(str(i) for i in range(5))

    def draw(self, length: int, rng: np.random.Generator) -> Drawn:
        moves = rng.integers(0, 3, length)
        step = np.array([0, 1, -1])[moves]
        return Drawn([self.input_symbols[m] for m in moves], [str(int(step.sum()) % 5)])


@register_task
@dataclasses.dataclass(frozen=True)
class ModularArithmetic(ChomskyTask):
    """Modular arithmetic without brackets: an expression ``d op d op ... d`` of digits mod
    ``modulus`` and operators ``+ - *`` (usual precedence); output its value mod ``modulus``.

    Expressions have odd length: an even requested length ``L`` gives ``L - 1`` symbols (as in
    the paper), so such examples have ``labels["length"] == L - 1``.
    """

    name: ClassVar[str] = "modular_arithmetic"
    description: ClassVar[str] = "Chomsky (regular): value mod 5 of a bracket-free expression"
    level: ClassVar[str] = "regular"
    modulus: ClassVar[int] = 5
    input_symbols: ClassVar[tuple[str, ...]] = (*(str(i) for i in range(5)), "+", "-", "*")
    output_symbols: ClassVar[tuple[str, ...]] = tuple(str(i) for i in range(5))

    def lengths(self, split: str) -> list[int]:
        return [L for L in super().lengths(split) if L % 2 == 1]

    def space_size(self, length: int) -> float:
        return float(self.modulus) ** ((length + 1) // 2) * 3.0 ** (length // 2)

    def draw(self, length: int, rng: np.random.Generator) -> Drawn:
        if length % 2 == 0:
            length -= 1
        digits = rng.integers(0, self.modulus, (length + 1) // 2)
        ops = [("+", "-", "*")[o] for o in rng.integers(0, 3, length // 2)]
        # value: sum of signed products of the multiplicative runs
        total, term, sign = 0, int(digits[0]), 1
        for op, d in zip(ops, digits[1:].tolist()):
            if op == "*":
                term *= d
            else:
                total += sign * term
                term, sign = d, (1 if op == "+" else -1)
        total += sign * term
        symbols = [str(digits[0])]
        for op, d in zip(ops, digits[1:].tolist()):
            symbols += [op, str(d)]
        return Drawn(symbols, [str(total % self.modulus)])
