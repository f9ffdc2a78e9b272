"""Minimal pairs: base and source inputs that differ in exactly one high-level variable.

Interchange interventions (Geiger et al. 2021) run the base input, set one variable (or the
activations aligned with it) to its value on the source input, and compare the output with
the causal model's counterfactual output. :func:`minimal_pairs` draws such pairs from a
task's :class:`~.base.CausalModel`, seeded and reproducible; :class:`MinimalPairs` holds them
as right-padded tensors and checks that each pair differs in the named variable only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from hierlens.core.validate import check_int

from ..base import Task
from .base import CausalInput, CausalModel, causal_model

__all__ = ["MinimalPairs", "minimal_pairs", "pairs_from_inputs"]

_MAX_ROUNDS = 20


@dataclasses.dataclass
class MinimalPairs:
    """``B`` minimal pairs for one variable, as tensors.

    Attributes:
        variable: the variable the pairs differ in.
        base, source: ``(B, T)`` int64 token ids, right-padded with ``pad_id``.
        base_lengths, source_lengths: ``(B,)`` int64 real tokens per row.
        base_query, source_query: ``(B,)`` int64 query positions.
        base_label, source_label: ``(B,)`` int64 outputs of the task's rule on each input.
        counterfactual: ``(B,)`` int64 output at the base's query once the variable takes
            the source's value (the target of an interchange intervention).
        candidates: ``(B, C)`` int64 output token ids the metric ranks (labels among them).
        base_values, source_values: ``{variable: (B,)}`` int64 values of every variable.
        pad_id: the padding token id.
        causal: the task is read left to right (padding never reaches a query).
        fixed: the variables every pair agrees on (None: every variable but
            :attr:`variable`).
    """

    variable: str
    base: torch.Tensor
    source: torch.Tensor
    base_lengths: torch.Tensor
    source_lengths: torch.Tensor
    base_query: torch.Tensor
    source_query: torch.Tensor
    base_label: torch.Tensor
    source_label: torch.Tensor
    counterfactual: torch.Tensor
    candidates: torch.Tensor
    base_values: dict[str, torch.Tensor]
    source_values: dict[str, torch.Tensor]
    pad_id: int
    causal: bool = True
    fixed: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        self.validate(allow_more=True)  # structure only; consumers check minimality

    def __len__(self) -> int:
        return int(self.base.shape[0])

    def validate(self, allow_more: bool = False) -> None:
        """Check shapes, labels among the candidates and, unless ``allow_more``, that every
        pair differs in :attr:`variable` and in no other variable (a ``ValueError`` naming
        the first offending pair and variable)."""
        B = self.base.shape[0]
        if B == 0:
            raise ValueError("MinimalPairs: no pairs")
        for name in ("base", "source"):
            t = getattr(self, name)
            if t.dim() != 2 or t.shape[0] != B or t.dtype != torch.int64:
                raise ValueError(f"MinimalPairs.{name} must be (B, T) int64, got {tuple(t.shape)}")
        for name in (
            "base_lengths", "source_lengths", "base_query", "source_query",
            "base_label", "source_label", "counterfactual",
        ):  # fmt: skip
            t = getattr(self, name)
            if tuple(t.shape) != (B,):
                raise ValueError(
                    f"MinimalPairs.{name} must have shape ({B},), got {tuple(t.shape)}"
                )
        if self.candidates.dim() != 2 or self.candidates.shape[0] != B:
            raise ValueError("MinimalPairs.candidates must be (B, C)")
        if bool((self.base_query >= self.base_lengths).any()) or bool(
            (self.source_query >= self.source_lengths).any()
        ):
            raise ValueError("MinimalPairs: a query position lies past its input's end")
        for name in ("base_label", "counterfactual"):
            inside = (self.candidates == getattr(self, name)[:, None]).any(1)
            if not bool(inside.all()):
                row = int((~inside).nonzero()[0, 0])
                raise ValueError(f"MinimalPairs: pair {row}'s {name} is not among its candidates")
        if (
            set(self.base_values) != set(self.source_values)
            or self.variable not in self.base_values
        ):
            raise ValueError(
                f"MinimalPairs: values must name the same variables, including {self.variable!r}"
            )
        if allow_more:
            return
        same = self.base_values[self.variable] == self.source_values[self.variable]
        if bool(same.any()):
            row = int(same.nonzero()[0, 0])
            raise ValueError(
                f"pair {row} has the same {self.variable!r} in base and source; a minimal pair "
                "differs in the variable it tests"
            )
        fixed = self.fixed if self.fixed is not None else tuple(self.base_values)
        for other in fixed:
            if other == self.variable:
                continue
            diff = self.base_values[other] != self.source_values[other]
            if bool(diff.any()):
                row = int(diff.nonzero()[0, 0])
                raise ValueError(
                    f"pair {row} differs in {other!r} as well as {self.variable!r}; minimal "
                    f"pairs for {self.variable!r} must agree on every other variable"
                )

    @property
    def same_length(self) -> bool:
        """Whether every base has its source's length and query position."""
        return bool(
            (self.base_lengths == self.source_lengths).all()
            and (self.base_query == self.source_query).all()
        )

    def subset(self, index: torch.Tensor | Sequence[int] | slice) -> MinimalPairs:
        """The pairs at ``index`` (a slice, indices or a boolean mask)."""
        if not isinstance(index, slice):
            index = torch.as_tensor(index)
        t = {
            f.name: getattr(self, f.name)[index]
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return MinimalPairs(
            variable=self.variable,
            base_values={k: v[index] for k, v in self.base_values.items()},
            source_values={k: v[index] for k, v in self.source_values.items()},
            pad_id=self.pad_id,
            causal=self.causal,
            fixed=self.fixed,
            **t,
        )

    def split(self, test_fraction: float, seed: int = 0) -> tuple[MinimalPairs, MinimalPairs]:
        """A seeded ``(train, held_out)`` split of the pairs."""
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
        B = len(self)
        n_test = max(1, int(round(B * test_fraction)))
        if n_test >= B:
            raise ValueError(f"{B} pairs are too few to hold {test_fraction:.0%} out")
        perm = torch.from_numpy(np.random.default_rng(seed).permutation(B))
        return self.subset(perm[n_test:]), self.subset(perm[:n_test])


def _pad(rows: Sequence[Sequence[int]], pad_id: int) -> torch.Tensor:
    T = max(len(r) for r in rows)
    out = torch.full((len(rows), T), pad_id, dtype=torch.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.int64)
    return out


def pairs_from_inputs(
    model: CausalModel,
    variable: str,
    bases: Sequence[CausalInput],
    sources: Sequence[CausalInput],
    allow_more: bool = False,
) -> MinimalPairs:
    """:class:`MinimalPairs` of given base and source inputs of ``model``'s task (a
    ``ValueError`` if a counterfactual is undefined or, unless ``allow_more``, a pair differs
    in another variable than ``variable``)."""
    model.check_variable(variable)
    if len(bases) != len(sources) or not bases:
        raise ValueError("need as many sources as bases, at least one")
    cfs = []
    for i, (b, s) in enumerate(zip(bases, sources)):
        cf = model.counterfactual(b, s, variable)
        if cf is None:
            raise ValueError(f"pair {i}: the causal model defines no counterfactual there")
        cfs.append(cf)
    pad = model.task.pad_id
    names = list(model.variables)
    pairs = MinimalPairs(
        variable=variable,
        base=_pad([b.tokens for b in bases], pad),
        source=_pad([s.tokens for s in sources], pad),
        base_lengths=torch.tensor([len(b) for b in bases]),
        source_lengths=torch.tensor([len(s) for s in sources]),
        base_query=torch.tensor([b.query for b in bases]),
        source_query=torch.tensor([s.query for s in sources]),
        base_label=torch.tensor([b.output for b in bases]),
        source_label=torch.tensor([s.output for s in sources]),
        counterfactual=torch.tensor(cfs),
        candidates=torch.tensor([model.candidates(b) for b in bases]),
        base_values={v: torch.tensor([b.values[v] for b in bases]) for v in names},
        source_values={v: torch.tensor([s.values[v] for s in sources]) for v in names},
        pad_id=pad,
        causal=model.causal_task,
        fixed=tuple(model.held_fixed(variable)),
    )
    pairs.validate(allow_more=allow_more)
    return pairs


def _key(inp: CausalInput, fixed: tuple[str, ...], same_length: bool) -> tuple:
    others = tuple(inp.values[k] for k in fixed)
    return (others, len(inp), inp.query) if same_length else (others,)


def minimal_pairs(
    task: Task | CausalModel,
    variable: str,
    n: int,
    *,
    split: str = "test_id",
    seed: int = 0,
    same_length: bool = True,
    informative: bool = True,
    options: Mapping[str, object] | None = None,
) -> MinimalPairs:
    """``n`` minimal pairs for ``variable`` of ``task``'s causal model.

    Each pair's source differs from its base in ``variable`` and agrees on every other
    variable (on those :meth:`~.base.CausalModel.held_fixed` names); with ``same_length`` both have the same length and query position (needed to
    patch every position); with ``informative`` the counterfactual output differs from the
    base's output (except for the task's null variables, whose counterfactual is the base
    output by definition). Deterministic in ``(task, variable, n, split, seed)``.

    Args:
        task: a task (its registered causal model is used, built with ``options``) or a
            causal model.
        variable: one of the causal model's variables (``ValueError`` otherwise).
        n: number of pairs.
    """
    model = task if isinstance(task, CausalModel) else causal_model(task, **dict(options or {}))
    model.check_variable(variable)
    check_int("n", n, numpy=True)
    null = variable in model.null_variables
    fixed = tuple(model.held_fixed(variable))
    rng = np.random.default_rng([int(seed), 0x9A1])
    bases: list[CausalInput] = []
    sources: list[CausalInput] = []
    pool: list[CausalInput] = []
    for round_ in range(_MAX_ROUNDS):
        pool += model.inputs(max(4 * n, 256), split, seed=int(seed) * 1000 + round_)
        buckets: dict[tuple, list[int]] = {}
        for i, inp in enumerate(pool):
            buckets.setdefault(_key(inp, fixed, same_length), []).append(i)
        bases, sources = [], []
        for i in rng.permutation(len(pool)):
            base = pool[i]
            group = buckets[_key(base, fixed, same_length)]
            for j in rng.permutation(len(group))[:64]:
                source = pool[group[j]]
                if source.values[variable] == base.values[variable]:
                    continue
                cf = model.counterfactual(base, source, variable)
                if cf is None or (informative and not null and cf == base.output):
                    continue
                bases.append(base)
                sources.append(source)
                break
            if len(bases) == n:
                return pairs_from_inputs(model, variable, bases, sources)
    raise ValueError(
        f"could only draw {len(bases)} of {n} minimal pairs for {variable!r} of the "
        f"{model.task_name} task ({split} split); loosen same_length/informative or ask fewer"
    )
