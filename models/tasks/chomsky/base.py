"""Shared machinery of the Chomsky-hierarchy tasks.

Follows [Deletang2023].

Layout of an example (no ``<bos>``/``<eos>``, as in the paper): the ``L`` input symbols, then
``computation_steps_mult * L`` blank tokens (the paper's extra "computation steps"; 0 by
default, as in the paper's main table), then one blank per output symbol. The model reads
blanks while it writes the output: ``targets`` hold the output symbols at the last
``output_length(L)`` positions and :data:`IGNORE_INDEX` elsewhere. Outputs are predicted all at
once from the blank positions (the paper's non-autoregressive setting), so any causal or
bidirectional model applies.

Splits (``n_train`` and ``n_test`` are task parameters; the paper uses 40 and 500, the CPU
defaults here are 16 and 64):

- ``train``: lengths ``min_length .. n_train`` drawn uniformly, strings not held out;
- ``test_id``: the same lengths, strings held out of ``train`` by a seeded hash of the input
  (a fraction ``test_id_fraction``). At a length whose input space is too small for a held-out
  set (fewer than ``10 / test_id_fraction`` strings, e.g. binary strings of length <= 6 with the
  default fraction) nothing is held out: ``test_id`` and ``train`` then share all strings of
  that length;
- ``test_ood``: lengths ``n_train + 1 .. n_test``.

Metric (the paper's): per-token accuracy of the argmax over the task's output symbols at the
output positions (for outputs that end in a termination token, up to and including it),
averaged over the examples of each length, then over lengths (``accuracy``); also
``accuracy_len_<L>`` per length (the length-generalisation curve; see
:func:`accuracy_by_length`) and ``seq_acc`` (whole output right, averaged likewise).

Gold structure: tasks with brackets give their nesting as ``tree`` (constituent spans over
the input symbols) and per-token ``depth``; the other tasks give a flat tree (the root span
only, so every input symbol has depth 1 and blanks 0) unless documented otherwise.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import math
import zlib
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from hierlens.core.validate import require

from ..base import BOS, EOS, IGNORE_INDEX, PAD, Batch, Example, Span, Task, gold_depths

BLANK = "<blank>"
_MAX_TRIES = 100_000


@dataclasses.dataclass(frozen=True)
class Drawn:
    """One raw instance: input and output symbols, gold spans over the input, extra labels."""

    inputs: list[str]
    outputs: list[str]
    tree: tuple[Span, ...] | None = None
    token_labels: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    labels: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class ChomskyTask(Task):
    """Base class of the Chomsky-hierarchy tasks (see the module docstring).

    Parameters:
        n_train: longest training length (>= ``min_length``).
        n_test: longest ``test_ood`` length (> ``n_train``).
        computation_steps_mult: extra blank steps per input symbol before the output.
        test_id_fraction: fraction of strings of each length held out for ``test_id``.
        split_seed: seed of the split hash.
    """

    objective: ClassVar[str] = "masked"
    main_metric: ClassVar[str] = "accuracy"
    #: "regular", "dcf" or "cs"
    level: ClassVar[str] = ""
    #: shortest meaningful input length
    min_length: ClassVar[int] = 1
    #: input and output symbols (token strings after the special tokens)
    input_symbols: ClassVar[tuple[str, ...]] = ()
    output_symbols: ClassVar[tuple[str, ...]] = ()
    #: the output's termination token (accuracy stops there), if any
    end_symbol: ClassVar[str | None] = None

    n_train: int = 16
    n_test: int = 64
    computation_steps_mult: int = 0
    test_id_fraction: float = 0.1
    split_seed: int = 0

    def __post_init__(self) -> None:
        need = functools.partial(require, self)
        for field in ("n_train", "n_test", "computation_steps_mult", "split_seed"):
            value = getattr(self, field)
            need(
                isinstance(value, int) and not isinstance(value, bool),
                f"{field} must be an integer, got {value!r}",
            )
        need(
            self.n_train >= self.min_length,
            f"n_train must be >= {self.min_length}, got {self.n_train}",
        )
        need(
            self.n_test > self.n_train,
            f"n_test must be > n_train={self.n_train}, got {self.n_test}",
        )
        need(self.computation_steps_mult >= 0, "computation_steps_mult must be >= 0")
        need(
            isinstance(self.test_id_fraction, float) and 0.0 < self.test_id_fraction < 1.0,
            f"test_id_fraction must be a float in (0, 1), got {self.test_id_fraction!r}",
        )

    # ----------------------------------------------------------------- task definition
    def output_length(self, length: int) -> int:
        """Number of output symbols for an input of ``length`` symbols (1 for classification)."""
        return 1

    def space_size(self, length: int) -> float:
        """Number of distinct inputs of ``length`` (a lower bound is enough)."""
        return float(len(self.input_symbols)) ** length

    @abc.abstractmethod
    def draw(self, length: int, rng: np.random.Generator) -> Drawn:
        """One random instance with ``length`` input symbols (each task defines it)."""

    # ----------------------------------------------------------------- vocabulary
    @property
    def vocab(self) -> tuple[str, ...]:
        syms = list(dict.fromkeys((*self.input_symbols, *self.output_symbols)))
        return (PAD, BOS, EOS, BLANK, *syms)

    @property
    def blank_id(self) -> int:
        return 3

    @property
    def output_ids(self) -> np.ndarray:
        """Token ids of the output symbols (the classes the metric's argmax ranges over)."""
        return np.array([self.vocab.index(s) for s in self.output_symbols], dtype=np.int64)

    def seq_len(self, length: int) -> int:
        """Tokens of an example with ``length`` input symbols."""
        return length * (1 + self.computation_steps_mult) + self.output_length(length)

    @property
    def max_len(self) -> int:
        return max(self.seq_len(n) for n in range(self.min_length, self.n_test + 1))

    def lengths(self, split: str) -> list[int]:
        """Input lengths of ``split``."""
        if split == "test_ood":
            return list(range(self.n_train + 1, self.n_test + 1))
        return list(range(self.min_length, self.n_train + 1))

    # ----------------------------------------------------------------- splits
    def holds_out(self, length: int) -> bool:
        """Whether strings of ``length`` are split between ``train`` and ``test_id``."""
        return self.space_size(length) >= 10.0 / self.test_id_fraction

    def is_test_id(self, inputs: Sequence[str]) -> bool:
        """Whether an input string is held out for ``test_id``."""
        key = f"{self.name}|{self.split_seed}|" + " ".join(inputs)
        return zlib.crc32(key.encode()) / 2**32 < self.test_id_fraction

    def _accept(self, drawn: Drawn, split: str) -> bool:
        if split == "test_ood" or not self.holds_out(len(drawn.inputs)):
            return True
        return self.is_test_id(drawn.inputs) == (split == "test_id")

    def sample_length(self, n: int, length: int, split: str, seed: int = 0) -> list[Example]:
        """``n`` examples of ``split`` with exactly ``length`` input symbols."""
        if length not in self.lengths(split):
            raise ValueError(f"length {length} is not in split {split!r} of {self.name}")
        rng = np.random.default_rng([seed, length, zlib.crc32(f"{self.name}|{split}".encode())])
        return self._draw_many(n, [length], split, rng)

    def _sample(self, n: int, split: str, seed: int) -> list[Example]:
        rng = np.random.default_rng([seed, zlib.crc32(f"{self.name}|{split}".encode())])
        return self._draw_many(n, self.lengths(split), split, rng)

    def _draw_many(
        self, n: int, lengths: list[int], split: str, rng: np.random.Generator
    ) -> list[Example]:
        out: list[Example] = []
        for _ in range(_MAX_TRIES * max(n, 1)):
            if len(out) == n:
                return out
            drawn = self.draw(int(rng.choice(lengths)), rng)
            if self._accept(drawn, split):
                out.append(self.make_example(drawn))
        raise RuntimeError(f"{self.name}: could not draw {n} {split} examples")

    def make_example(self, drawn: Drawn) -> Example:
        """The :class:`Example` of a raw instance (tokens, targets, tree and labels)."""
        L = len(drawn.inputs)
        if len(drawn.outputs) != self.output_length(L):
            raise ValueError(
                f"{self.name}: expected {self.output_length(L)} output symbols, got {len(drawn.outputs)}"
            )
        n_blank = L * self.computation_steps_mult + len(drawn.outputs)
        tokens = self.encode(drawn.inputs) + [self.blank_id] * n_blank
        targets = [IGNORE_INDEX] * (len(tokens) - len(drawn.outputs)) + self.encode(drawn.outputs)
        spans = drawn.tree if drawn.tree is not None else ((0, L),)
        tree = tuple(sorted(set(spans), key=lambda s: (s[0], -s[1])))
        pad = [-1] * n_blank
        token_labels = {"depth": tuple(gold_depths(L, tree) + [0] * n_blank)}
        for key, values in drawn.token_labels.items():
            token_labels[key] = tuple(list(values) + pad)
        return Example(
            tokens=tuple(tokens),
            targets=tuple(targets),
            word_positions=tuple(range(L)),
            tree=tree,
            token_labels=token_labels,
            labels={"length": L, "output": " ".join(drawn.outputs), **drawn.labels},
        )

    # ----------------------------------------------------------------- metric
    def scored_positions(self, targets: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` bool: output positions counted by the metric (up to the end token)."""
        out = targets != IGNORE_INDEX
        if self.end_symbol is not None:
            is_end = (targets == self.token_id(self.end_symbol)).long()
            out &= (is_end.cumsum(1) - is_end) == 0
        return out

    def metric_counts(
        self, batch: Batch, logits: torch.Tensor
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        ids = torch.as_tensor(self.output_ids, device=logits.device)
        pred = ids[logits.index_select(-1, ids).argmax(-1)]
        scored = self.scored_positions(batch.targets)
        right = scored & (pred == batch.targets)
        has = scored.any(1)
        whole = has & (right.sum(1) == scored.sum(1))
        return {"token_acc": (right.sum(), scored.sum()), "seq_acc": (whole.sum(), has.sum())}

    def evaluate(
        self,
        model: torch.nn.Module,
        split: str = "test_id",
        n: int = 1000,
        *,
        seed: int = 12345,
        batch_size: int = 256,
        device: str | torch.device | None = None,
        examples: Sequence[Example] | None = None,
    ) -> dict[str, float]:
        """The paper's score of ``model`` on ``split``.

        Draws ``ceil(n / n_lengths)`` examples per length of ``split`` (or groups ``examples`` by
        length), computes per-token accuracy for each length and averages over lengths.
        Returns ``accuracy`` (main metric), ``seq_acc``, ``loss`` (means over lengths),
        ``accuracy_len_<L>`` for every length, and ``n``. ``model`` maps ``(B, T)`` int64
        tokens to ``(B, T, d_vocab)`` logits.
        """
        if examples is None:
            lengths = self.lengths(split)
            per = max(1, math.ceil(n / len(lengths)))
            examples = [ex for L in lengths for ex in self.sample_length(per, L, split, seed=seed)]
        if not examples:
            raise ValueError("no examples to evaluate")
        groups: dict[int, list[Example]] = {}
        for ex in examples:
            groups.setdefault(int(ex.labels["length"]), []).append(ex)
        per_len = {
            L: Task.evaluate(
                self, model, split, batch_size=batch_size, device=device, examples=group
            )
            for L, group in sorted(groups.items())
        }
        out: dict[str, float] = {
            key: float(np.mean([r[src] for r in per_len.values()]))
            for key, src in (("accuracy", "token_acc"), ("seq_acc", "seq_acc"), ("loss", "loss"))
        }
        for L, r in per_len.items():
            out[f"accuracy_len_{L}"] = r["token_acc"]
        out["n"] = len(examples)
        return out


def accuracy_by_length(results: dict[str, float]) -> dict[int, float]:
    """``{length: accuracy}`` from :meth:`ChomskyTask.evaluate` output, sorted by length."""
    prefix = "accuracy_len_"
    found = {int(k[len(prefix) :]): v for k, v in results.items() if k.startswith(prefix)}
    return dict(sorted(found.items()))


def binary(rng: np.random.Generator, length: int) -> list[str]:
    """``length`` uniform binary symbols as strings."""
    return [str(b) for b in rng.integers(0, 2, length)]
