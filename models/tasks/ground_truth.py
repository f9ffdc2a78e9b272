"""Ground-truth feature activations: what a dictionary trained on a task *should* find.

A task whose latent hierarchy is known implements :class:`KnownLatents`: one method,
``ground_truth(data)``, that turns the task's own data (a list of :class:`~.base.Example`
for token tasks, a :class:`~.concepts.ConceptSample` for the synthetic concept generators)
into a :class:`GroundTruth`:

- ``activations`` ``(n_rows, n_features)``: the true value of every feature on every row.
  For token tasks there is one row per token of every example, examples in order and
  positions in order (exactly the rows :func:`hierlens.models.capture` stores when it
  captures those examples with every position); for synthetic vectors one row per sample.
  Indicators are 0/1; the synthetic concepts give their magnitudes.
- ``features``: a :class:`FeatureGraph`: a name and a tree level (0 at the top) per feature
  and the parent -> child edges. A child is true only where one of its parents is; a feature
  may have several parents (the graph is a DAG), as when a symbol can be produced by several
  parents of a grammar.

:func:`ground_truth` is the one entry point (it names the tasks that have known latents when
given one that does not); :func:`store_rows` maps an activation store's rows (its
``sequence``/``position`` index) to ground-truth rows, so features stay aligned per token
with activations captured from a subset of positions.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "FeatureGraph",
    "GroundTruth",
    "KnownLatents",
    "ground_truth",
    "store_rows",
    "token_offsets",
]


@dataclasses.dataclass(frozen=True)
class FeatureGraph:
    """The true features of a task and how they nest.

    Attributes:
        names: one readable name per feature (``"h2=s1"``, ``"depth=3"``, ``"S>NP>PP"``).
        level: tree level of each feature, 0 for top-level features; a child's level is
            larger than each of its parents'.
        edges: ``(parent, child)`` index pairs.
    """

    names: tuple[str, ...]
    level: tuple[int, ...]
    edges: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        object.__setattr__(self, "level", tuple(int(v) for v in self.level))
        object.__setattr__(self, "edges", tuple((int(p), int(c)) for p, c in self.edges))
        n = len(self.names)
        if n == 0:
            raise ValueError("a FeatureGraph needs at least one feature")
        if len(set(self.names)) != n:
            raise ValueError("feature names must be distinct")
        if len(self.level) != n:
            raise ValueError(f"level has {len(self.level)} entries for {n} features")
        if any(v < 0 for v in self.level):
            raise ValueError("feature levels must be >= 0")
        for p, c in self.edges:
            if not (0 <= p < n and 0 <= c < n):
                raise ValueError(f"edge ({p}, {c}) names a feature outside [0, {n})")
            if self.level[c] <= self.level[p]:
                raise ValueError(
                    f"edge {self.names[p]!r} -> {self.names[c]!r}: a child's level must be "
                    f"larger than its parent's ({self.level[c]} <= {self.level[p]})"
                )
        if len(set(self.edges)) != len(self.edges):
            raise ValueError("repeated edges")

    @property
    def n_features(self) -> int:
        return len(self.names)

    def children(self, feature: int) -> list[int]:
        """Indices of the children of ``feature``."""
        return [c for p, c in self.edges if p == feature]

    def parents(self, feature: int) -> list[int]:
        """Indices of the parents of ``feature``."""
        return [p for p, c in self.edges if c == feature]

    def ancestors(self, feature: int) -> set[int]:
        """Every feature above ``feature`` (parents, their parents, ...)."""
        out: set[int] = set()
        todo = self.parents(feature)
        while todo:
            p = todo.pop()
            if p not in out:
                out.add(p)
                todo.extend(self.parents(p))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "level": list(self.level),
            "edges": [list(e) for e in self.edges],
        }


@dataclasses.dataclass(frozen=True)
class GroundTruth:
    """True feature activations ``(n_rows, n_features)`` and their :class:`FeatureGraph`
    (see the module docstring for the row order)."""

    activations: torch.Tensor
    features: FeatureGraph

    def __post_init__(self) -> None:
        a = self.activations
        if not isinstance(a, torch.Tensor) or a.dim() != 2:
            raise ValueError("activations must be a 2-D tensor (n_rows, n_features)")
        if not isinstance(self.features, FeatureGraph):
            raise TypeError(f"features must be a FeatureGraph, got {type(self.features).__name__}")
        if a.shape[1] != self.features.n_features:
            raise ValueError(
                f"activations have {a.shape[1]} columns for {self.features.n_features} features"
            )
        if not a.is_floating_point():
            object.__setattr__(self, "activations", a.float())
        if not bool(torch.isfinite(self.activations).all()):
            raise ValueError("ground-truth activations contain NaN or inf values")

    @property
    def n_rows(self) -> int:
        return int(self.activations.shape[0])

    @property
    def active(self) -> torch.Tensor:
        """``(n_rows, n_features)`` bool: where each feature is true."""
        return self.activations != 0

    def select(self, rows: torch.Tensor | Sequence[int]) -> GroundTruth:
        """The ground truth of some rows (a bool mask or indices), same features."""
        rows = torch.as_tensor(rows)
        if rows.dtype == torch.bool and rows.shape != (self.n_rows,):
            raise ValueError(
                f"a row mask must have shape ({self.n_rows},), got {tuple(rows.shape)}"
            )
        return GroundTruth(self.activations[rows], self.features)

    def check_hierarchy(self) -> None:
        """Raise ``ValueError`` if a child is true on a row where none of its parents is."""
        act = self.active
        for c in range(self.features.n_features):
            parents = self.features.parents(c)
            if not parents:
                continue
            bad = act[:, c] & ~act[:, parents].any(1)
            if bool(bad.any()):
                row = int(bad.nonzero()[0, 0])
                raise ValueError(
                    f"feature {self.features.names[c]!r} is true on row {row} without any of "
                    f"its parents {[self.features.names[p] for p in parents]}"
                )


class KnownLatents(abc.ABC):
    """Mixin of the tasks whose latent features are known exactly."""

    @abc.abstractmethod
    def ground_truth(self, data: Any) -> GroundTruth:
        """The :class:`GroundTruth` of the task's own data (see the module docstring)."""


def ground_truth(task: Any, data: Any) -> GroundTruth:
    """The true feature activations of ``data`` under ``task`` (a task implementing
    :class:`KnownLatents`).

    Raises:
        ValueError: ``task`` has no known latents (the message lists the kinds that do).
    """
    if not isinstance(task, KnownLatents):
        have = sorted(_known_latent_classes())
        raise ValueError(
            f"{type(task).__name__} has no known latents (it does not implement "
            f"KnownLatents.ground_truth); tasks with known latents: {', '.join(have)}"
        )
    return task.ground_truth(data)


def _known_latent_classes() -> set[str]:
    out: set[str] = set()
    todo = list(KnownLatents.__subclasses__())
    while todo:
        cls = todo.pop()
        out.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return out


def token_offsets(lengths: Sequence[int]) -> torch.Tensor:
    """``(n + 1,)`` int64 row offsets of ``n`` sequences of the given token counts laid
    end to end."""
    lengths = torch.as_tensor(list(lengths), dtype=torch.int64)
    return torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])


def store_rows(
    lengths: Sequence[int], sequence: torch.Tensor, position: torch.Tensor
) -> torch.Tensor:
    """Ground-truth row of each activation-store row.

    Args:
        lengths: token count of every example the store was captured from.
        sequence, position: the store's ``index["sequence"]`` and ``index["position"]``
            (``(n_store_rows,)``).

    Raises:
        ValueError: a store row names a sequence or position outside the examples (the
            store was not captured from these examples, or was pooled over words).
    """
    lengths_t = torch.as_tensor(list(lengths), dtype=torch.int64)
    sequence = torch.as_tensor(sequence, dtype=torch.int64)
    position = torch.as_tensor(position, dtype=torch.int64)
    if sequence.shape != position.shape or sequence.dim() != 1:
        raise ValueError("sequence and position must be 1-D tensors of one length")
    if len(sequence) and (int(sequence.min()) < 0 or int(sequence.max()) >= len(lengths_t)):
        raise ValueError(
            f"store rows name sequences up to {int(sequence.max())}, but only "
            f"{len(lengths_t)} examples were given: the store was not captured from them"
        )
    if len(sequence) and bool(((position < 0) | (position >= lengths_t[sequence])).any()):
        raise ValueError(
            "store rows name positions beyond their example's length: the store was not "
            "captured from these examples (or was pooled over words)"
        )
    return token_offsets(lengths_t.tolist())[sequence] + position


def one_hot_rows(values: np.ndarray, n: int) -> np.ndarray:
    """``(len(values), n)`` float32 one-hot rows; a value ``< 0`` gives a zero row."""
    values = np.asarray(values, dtype=np.int64)
    out = np.zeros((len(values), n), dtype=np.float32)
    ok = values >= 0
    out[np.nonzero(ok)[0], values[ok]] = 1.0
    return out


def constituent_ground_truth(examples: Sequence[Any], trees: Sequence[Any]) -> GroundTruth:
    """Ground truth of labelled constituency trees over the words of token examples.

    A feature is a *path of labels* from the root, ``"S"``, ``"S>NP"``, ``"S>NP>PP"``,
    ``"S>NP>Det"`` (down to the part of speech); it is 1 on the word tokens inside a
    constituent reached by that path. Its parent is the path without its last label, its
    level the path's length minus one, so the features form a tree even where a label recurs
    (an NP inside a PP inside an NP). The features are the paths that occur in ``trees``,
    ordered by level then name; tokens that are not words are all zero.

    Args:
        examples: token examples (``tokens``, ``word_positions``), one per tree.
        trees: ``nltk.Tree`` s (or Penn bracketings) over each example's words.
    """
    import nltk

    if len(examples) != len(trees) or not examples:
        raise ValueError("constituent_ground_truth needs one tree per example (and at least one)")
    per_word: list[list[list[str]]] = []
    for ex, tree in zip(examples, trees):
        t = nltk.Tree.fromstring(tree) if isinstance(tree, str) else tree
        leaves = t.treepositions("leaves")
        if len(leaves) != len(ex.word_positions):
            raise ValueError(
                f"a tree has {len(leaves)} words, its example {len(ex.word_positions)}"
            )
        words = []
        for leaf in leaves:
            labels = [t[leaf[:i]].label() for i in range(len(leaf))]
            words.append([">".join(labels[: i + 1]) for i in range(len(labels))])
        per_word.append(words)
    paths = sorted(
        {p for words in per_word for w in words for p in w}, key=lambda p: (p.count(">"), p)
    )
    index = {p: i for i, p in enumerate(paths)}
    edges = [(index[p.rsplit(">", 1)[0]], index[p]) for p in paths if ">" in p]
    offsets = token_offsets([len(e.tokens) for e in examples])
    acts = torch.zeros(int(offsets[-1]), len(paths))
    for e, ex in enumerate(examples):
        for w, pos in enumerate(ex.word_positions):
            acts[int(offsets[e]) + pos, [index[p] for p in per_word[e][w]]] = 1.0
    level = [p.count(">") for p in paths]
    return GroundTruth(acts, FeatureGraph(tuple(paths), tuple(level), tuple(edges)))
