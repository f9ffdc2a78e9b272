"""Deterministic context-free tasks of [Deletang2023].

Gold structure: bracket nesting for modular arithmetic with brackets and solve equation
(each matched ``( ... )`` is a constituent); for stack manipulation each pushed symbol (an
initial stack symbol or a ``PUSH``) spans from its push to the ``POP`` that removes it (or to
the end), so a symbol's tree depth is 1 + the stack size while it is on the stack; reverse
string is flat.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from ..base import Span, gold_depths
from ..registry import register_task
from .base import ChomskyTask, Drawn, binary

_DIGITS = tuple(str(i) for i in range(5))


@register_task
@dataclasses.dataclass(frozen=True)
class ReverseString(ChomskyTask):
    """Reverse string: output the binary input reversed (``L`` output symbols)."""

    name: ClassVar[str] = "reverse_string"
    description: ClassVar[str] = "Chomsky (DCF): reverse a binary string"
    level: ClassVar[str] = "dcf"
    input_symbols: ClassVar[tuple[str, ...]] = ("0", "1")
    output_symbols: ClassVar[tuple[str, ...]] = ("0", "1")

    def output_length(self, length: int) -> int:
        return length

    def draw(self, length: int, rng: np.random.Generator) -> Drawn:
        s = binary(rng, length)
        return Drawn(s, s[::-1])


@register_task
@dataclasses.dataclass(frozen=True)
class StackManipulation(ChomskyTask):
    """Stack manipulation: a binary stack (bottom to top) followed by actions ``POP``,
    ``PUSH0``, ``PUSH1`` (a ``POP`` on an empty stack does nothing); output the final stack top
    to bottom, then ``<end>``, padded with ``0`` to ``L + 1`` symbols. The metric counts
    positions up to ``<end>``. A length-1 input is a one-symbol stack without actions.

    Token labels: ``stack_depth``, the stack size after each input symbol's action.
    """

    name: ClassVar[str] = "stack_manipulation"
    description: ClassVar[str] = "Chomsky (DCF): execute push/pop actions on a binary stack"
    level: ClassVar[str] = "dcf"
    input_symbols: ClassVar[tuple[str, ...]] = ("0", "1", "POP", "PUSH0", "PUSH1")
    output_symbols: ClassVar[tuple[str, ...]] = ("0", "1", "<end>")
    end_symbol: ClassVar[str | None] = "<end>"

    def output_length(self, length: int) -> int:
        return length + 1

    def draw(self, length: int, rng: np.random.Generator) -> Drawn:
        n_stack = 1 if length == 1 else int(rng.integers(1, length))
        inputs = binary(rng, n_stack)
        inputs += [("POP", "PUSH0", "PUSH1")[a] for a in rng.integers(0, 3, length - n_stack)]
        stack: list[tuple[str, int]] = []  # (symbol, position of its push)
        spans: list[Span] = [(0, length)]
        depth: list[int] = []
        for t, sym in enumerate(inputs):
            if sym == "POP":
                if stack:
                    spans.append((stack.pop()[1], t + 1))
            else:
                stack.append((sym[-1], t))
            depth.append(len(stack))
        spans += [(start, length) for _, start in stack]
        final = [s for s, _ in reversed(stack)]
        out = final + ["<end>"] + ["0"] * (length - len(final))
        return Drawn(inputs, out, tuple(spans), {"stack_depth": depth})


def bracket_spans(symbols: list[str]) -> list[Span]:
    """Half-open spans of the matched ``(``/``)`` pairs of a symbol list."""
    open_at: list[int] = []
    spans: list[Span] = []
    for t, s in enumerate(symbols):
        if s == "(":
            open_at.append(t)
        elif s == ")":
            if not open_at:
                raise ValueError("unbalanced brackets")
            spans.append((open_at.pop(), t + 1))
    if open_at:
        raise ValueError("unbalanced brackets")
    return spans


def bracket_expression(
    length: int, modulus: int, ops: tuple[str, ...], rng: np.random.Generator
) -> tuple[list[str], int]:
    """A random bracketed expression of exactly ``length`` symbols and its value mod
    ``modulus``, from the paper's grammar: ``d``, ``-d``, ``(d)``, ``(-d)`` for lengths 1-4,
    else ``(left op right)`` with a uniform split of the remaining length."""
    if length < 1:
        raise ValueError(f"expression length must be >= 1, got {length}")
    if length <= 4:
        d = int(rng.integers(0, modulus))
        neg = length in (2, 4)
        core = ["-", str(d)] if neg else [str(d)]
        value = -d if neg else d
        return (["(", *core, ")"] if length >= 3 else core), value % modulus
    left_len = int(rng.integers(1, length - 3))
    left, lv = bracket_expression(left_len, modulus, ops, rng)
    right, rv = bracket_expression(length - 3 - left_len, modulus, ops, rng)
    op = ops[int(rng.integers(0, len(ops)))]
    value = lv + rv if op == "+" else (lv - rv if op == "-" else lv * rv)
    return ["(", *left, op, *right, ")"], value % modulus


def _bracket_space(length: int, modulus: int) -> float:
    # an expression of length L has k >= (L + 3) / 7 digits and k - 1 binary operators
    k = max(1, -(-(length + 3) // 7))
    return float(modulus) ** k * 2.0 ** (k - 1)


def _nesting_labels(symbols: list[str], spans: list[Span]) -> dict[str, list[int]]:
    """Token label ``nesting``: the number of bracket pairs enclosing each symbol."""
    return {"nesting": gold_depths(len(symbols), spans)}


@register_task
@dataclasses.dataclass(frozen=True)
class ModularArithmeticBrackets(ChomskyTask):
    """Modular arithmetic with brackets: the value mod 5 of a bracketed expression over digits
    with ``+`` and ``-`` (and ``*`` when ``mult``); expressions follow the paper's grammar
    (see :func:`bracket_expression`).

    Parameters (besides the common ones): ``mult``: include multiplication.
    Gold tree: the bracket nesting; token label ``nesting``: brackets enclosing each symbol.
    """

    name: ClassVar[str] = "modular_arithmetic_brackets"
    description: ClassVar[str] = "Chomsky (DCF): value mod 5 of a bracketed expression"
    level: ClassVar[str] = "dcf"
    modulus: ClassVar[int] = 5
    input_symbols: ClassVar[tuple[str, ...]] = (*_DIGITS, "+", "-", "*", "(", ")")
    output_symbols: ClassVar[tuple[str, ...]] = _DIGITS

    mult: bool = False

    def space_size(self, length: int) -> float:
        return _bracket_space(length, self.modulus)

    def draw(self, length: int, rng: np.random.Generator) -> Drawn:
        ops = ("+", "-", "*") if self.mult else ("+", "-")
        expr, value = bracket_expression(length, self.modulus, ops, rng)
        spans = bracket_spans(expr)
        return Drawn(expr, [str(value)], ((0, length), *spans), _nesting_labels(expr, spans))


@register_task
@dataclasses.dataclass(frozen=True)
class SolveEquation(ChomskyTask):
    """Solve equation: a bracketed expression of ``L - 2`` symbols (+ and - only, mod 5) with
    one digit replaced by ``x``, then ``=`` and its value; output the value of ``x`` (unique
    since + and - are invertible). Lengths start at 3.

    Gold tree: the bracket nesting; token label ``nesting``.
    """

    name: ClassVar[str] = "solve_equation"
    description: ClassVar[str] = "Chomsky (DCF): solve a bracketed linear equation mod 5"
    level: ClassVar[str] = "dcf"
    min_length: ClassVar[int] = 3
    modulus: ClassVar[int] = 5
    input_symbols: ClassVar[tuple[str, ...]] = (*_DIGITS, "+", "-", "(", ")", "x", "=")
    output_symbols: ClassVar[tuple[str, ...]] = _DIGITS

    def space_size(self, length: int) -> float:
        return _bracket_space(length - 2, self.modulus)

    def draw(self, length: int, rng: np.random.Generator) -> Drawn:
        expr, value = bracket_expression(length - 2, self.modulus, ("+", "-"), rng)
        digit_at = [t for t, s in enumerate(expr) if s in _DIGITS]
        at = digit_at[int(rng.integers(0, len(digit_at)))]
        solution = expr[at]
        expr = [*expr[:at], "x", *expr[at + 1 :], "=", str(value)]
        spans = bracket_spans(expr)
        return Drawn(expr, [solution], ((0, length), *spans), _nesting_labels(expr, spans))
