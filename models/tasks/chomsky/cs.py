"""Context-sensitive tasks of [Deletang2023]. Gold trees are flat (no bracket structure)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from ..registry import register_task
from .base import ChomskyTask, Drawn, binary


@register_task
@dataclasses.dataclass(frozen=True)
class DuplicateString(ChomskyTask):
    """Duplicate string: output ``ww`` for a binary input ``w`` (``2L`` output symbols)."""

    name: ClassVar[str] = "duplicate_string"
    description: ClassVar[str] = "Chomsky (CS): write a binary string twice"
    level: ClassVar[str] = "cs"
    input_symbols: ClassVar[tuple[str, ...]] = ("0", "1")
    output_symbols: ClassVar[tuple[str, ...]] = ("0", "1")

    def output_length(self, length: int) -> int:
        return 2 * length

    def draw(self, length: int, rng: np.random.Generator) -> Drawn:
        s = binary(rng, length)
        return Drawn(s, s + s)


@register_task
@dataclasses.dataclass(frozen=True)
class MissingDuplicate(ChomskyTask):
    """Missing duplicate: a binary string ``w`` of ``L // 2`` symbols written twice with one
    symbol replaced by ``_`` (and a trailing ``#`` when ``L`` is odd); output the missing
    symbol. Lengths start at 2."""

    name: ClassVar[str] = "missing_duplicate"
    description: ClassVar[str] = "Chomsky (CS): recover the masked symbol of a duplicated string"
    level: ClassVar[str] = "cs"
    min_length: ClassVar[int] = 2
    input_symbols: ClassVar[tuple[str, ...]] = ("0", "1", "_", "#")
    output_symbols: ClassVar[tuple[str, ...]] = ("0", "1")

    def space_size(self, length: int) -> float:
        return 2.0 ** (length // 2) * (length - length % 2)

    def draw(self, length: int, rng: np.random.Generator) -> Drawn:
        w = binary(rng, length // 2)
        ww = w + w
        at = int(rng.integers(0, len(ww)))
        missing = ww[at]
        ww[at] = "_"
        return Drawn(ww + ["#"] * (length % 2), [missing], labels={"masked_index": at})


@register_task
@dataclasses.dataclass(frozen=True)
class OddsFirst(ChomskyTask):
    """Odds first: output the symbols at odd positions (1st, 3rd, ...), then those at even
    positions (``L`` output symbols)."""

    name: ClassVar[str] = "odds_first"
    description: ClassVar[str] = "Chomsky (CS): odd-position symbols first, then even ones"
    level: ClassVar[str] = "cs"
    input_symbols: ClassVar[tuple[str, ...]] = ("0", "1")
    output_symbols: ClassVar[tuple[str, ...]] = ("0", "1")

    def output_length(self, length: int) -> int:
        return length

    def draw(self, length: int, rng: np.random.Generator) -> Drawn:
        s = binary(rng, length)
        return Drawn(s, s[0::2] + s[1::2])


def _random_positive(bits: int, rng: np.random.Generator) -> int:
    """Uniform integer in ``[1, 2**bits - 1]`` (Python int, any size)."""
    while True:
        value = int("".join(binary(rng, bits)), 2)
        if value:
            return value


def _little_endian(value: int, width: int = 0) -> list[str]:
    return list(format(value, "b").zfill(width)[::-1])


@register_task
@dataclasses.dataclass(frozen=True)
class BinaryAddition(ChomskyTask):
    """Binary addition: ``n + m`` with both numbers little-endian binary (lengths split
    uniformly, each at least one symbol, values >= 1); output the sum little-endian without
    trailing zeros, then ``<end>``, padded with ``0`` to ``L + 1`` symbols. The metric counts
    positions up to ``<end>``. Lengths start at 3."""

    name: ClassVar[str] = "binary_addition"
    description: ClassVar[str] = "Chomsky (CS): add two little-endian binary numbers"
    level: ClassVar[str] = "cs"
    min_length: ClassVar[int] = 3
    input_symbols: ClassVar[tuple[str, ...]] = ("0", "1", "+")
    output_symbols: ClassVar[tuple[str, ...]] = ("0", "1", "<end>")
    end_symbol: ClassVar[str | None] = "<end>"

    def output_length(self, length: int) -> int:
        return length + 1

    def space_size(self, length: int) -> float:
        return 2.0 ** (length - 2)

    def draw(self, length: int, rng: np.random.Generator) -> Drawn:
        len_n = int(rng.integers(1, length - 1))
        len_m = length - 1 - len_n
        n, m = _random_positive(len_n, rng), _random_positive(len_m, rng)
        inputs = _little_endian(n, len_n) + ["+"] + _little_endian(m, len_m)
        total = _little_endian(n + m)
        out = total + ["<end>"] + ["0"] * (length - len(total))
        return Drawn(inputs, out, labels={"n": str(n), "m": str(m)})


@register_task
@dataclasses.dataclass(frozen=True)
class BucketSort(ChomskyTask):
    """Bucket sort: sort a string over the alphabet ``0..4`` (``L`` output symbols)."""

    name: ClassVar[str] = "bucket_sort"
    description: ClassVar[str] = "Chomsky (CS): sort a string over five symbols"
    level: ClassVar[str] = "cs"
    input_symbols: ClassVar[tuple[str, ...]] = tuple(str(i) for i in range(5))
    output_symbols: ClassVar[tuple[str, ...]] = tuple(str(i) for i in range(5))

    def output_length(self, length: int) -> int:
        return length

    def draw(self, length: int, rng: np.random.Generator) -> Drawn:
        s = [str(v) for v in rng.integers(0, 5, length)]
        return Drawn(s, sorted(s))
