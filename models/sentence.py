"""A real sentence with its gold trees: the unit that treebank and text readers produce.

Spans follow the convention of :attr:`hierlens.models.tasks.Example.tree`: half-open word
spans ``(i, j)`` of two or more words, the whole sentence ``(0, n)`` included, sorted by
start then longest first. Single-word constituents are not spans (a unary chain over one
word collapses into that word); a unary chain over several words collapses into one span.

Two trees are kept: ``spans`` (the n-ary tree, for bracketing F1) and ``binary`` (its
right-binarised copy: a node with children ``c1 ... ck`` gets the extra spans
``c2..ck``, ``c3..ck``, ..., for tree distances). Dependency ``heads`` are kept when the
source gives them (CoNLL-U); :meth:`Sentence.distances` and :meth:`Sentence.depths` then
use the dependency tree, as [Hewitt2019] do, and otherwise the binarised
constituency tree.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from .tree_distances import depths_and_tour, span_forest, subtree_ranges, tree_distance_matrix

__all__ = ["PTB_PUNCT", "Sentence", "binarize_spans", "dependency_spans"]

Span = tuple[int, int]

#: PTB part-of-speech tags counted as punctuation (those Hewitt & Manning exclude)
PTB_PUNCT = frozenset({"``", "''", ",", ".", ":", "-LRB-", "-RRB-"})


def _sorted(spans: set[Span]) -> tuple[Span, ...]:
    return tuple(sorted(spans, key=lambda s: (s[0], -s[1])))


def _children(span: Span, spans: Sequence[Span]) -> list[Span]:
    """The children of ``span`` in a laminar family: maximal proper sub-spans and the
    single words no sub-span covers, left to right."""
    i, j = span
    inner = [s for s in spans if i <= s[0] and s[1] <= j and s != span]
    out, w = [], i
    while w < j:
        best = max((s for s in inner if s[0] == w), key=lambda s: s[1], default=None)
        out.append(best if best is not None else (w, w + 1))
        w = out[-1][1]
    return out


def binarize_spans(spans: Sequence[Span]) -> tuple[Span, ...]:
    """Right-binarise an n-ary tree given as spans: ``(c1 c2 ... ck)`` becomes
    ``(c1 (c2 (... ck)))``; spans of one word are never added. Linear in the number of
    spans and words (one sweep finds every span's children)."""
    spans = list(spans)
    n = max((j for _, j in spans), default=0)
    parent, innermost = span_forest(spans, n)
    starts: list[list[int]] = [[] for _ in spans]  # the start of each child of each span
    for s, p in enumerate(parent):
        if p >= 0:
            starts[p].append(spans[s][0])
    for w, p in enumerate(innermost):
        if p >= 0:
            starts[p].append(w)
    out = set(spans)
    for s, kids in enumerate(starts):
        kids.sort()
        out.update((k, spans[s][1]) for k in kids[1:-1])
    return _sorted(out)


def _cycle_checked(heads: Sequence[int]) -> None:
    try:
        depths_and_tour(heads)
    except ValueError:
        raise ValueError("heads contain a cycle") from None


def dependency_spans(heads: Sequence[int]) -> tuple[Span, ...]:
    """Spans of the yields of dependency subtrees (``heads[i]``: head of word ``i``, ``-1``
    for the root) that cover two or more contiguous words; the whole sentence included."""
    n = len(heads)
    _cycle_checked(heads)
    lo, hi, size = subtree_ranges(heads)
    ok = (size >= 2) & (hi - lo + 1 == size)
    spans = {(int(a), int(b) + 1) for a, b in zip(lo[ok], hi[ok])}
    if n >= 2:
        spans.add((0, n))
    return _sorted(spans)


def _spans_above(spans: Sequence[Span], n: int) -> np.ndarray:
    """``(n,)`` int64: how many of ``spans`` contain each word."""
    diff = np.zeros(n + 1, dtype=np.int64)
    if spans:
        ends = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
        np.add.at(diff, ends[:, 0], 1)
        np.add.at(diff, ends[:, 1], -1)
    return np.cumsum(diff)[:n]


def _check_heads(heads: Sequence[int]) -> None:
    n = len(heads)
    roots = [i for i, h in enumerate(heads) if h == -1]
    if len(roots) != 1:
        raise ValueError(f"a dependency tree needs exactly one root, got {len(roots)}")
    if any(not -1 <= h < n or h == i for i, h in enumerate(heads)):
        raise ValueError(f"heads must be word indices (or -1 for the root), got {list(heads)}")
    dependency_spans(heads)  # raises on cycles


@dataclasses.dataclass(frozen=True)
class Sentence:
    """A sentence of ``n`` words with gold trees and per-word labels.

    Attributes:
        words: the ``n`` words (punctuation tokens included unless dropped).
        pos: part of speech of each word (PTB tags from brackets, UPOS from CoNLL-U).
        spans: the n-ary constituency tree as spans (see the module docstring). From CoNLL-U,
            the contiguous yields of dependency subtrees.
        span_labels: label of each span (the top label of a collapsed unary chain; from
            CoNLL-U, the head word's UPOS followed by ``P``, e.g. ``NOUNP``).
        constituent: label of the lowest constituent above each word (its phrase, single-word
            phrases included; from CoNLL-U, the phrase the word heads or else its head's).
        punct: which words are punctuation.
        heads: head of each word (0-based, ``-1`` for the root) when the source gives a
            dependency tree, else None.
        deprels: dependency relations when heads are given, else None.
    """

    words: tuple[str, ...]
    pos: tuple[str, ...]
    spans: tuple[Span, ...]
    span_labels: tuple[str, ...]
    constituent: tuple[str, ...]
    punct: tuple[bool, ...]
    heads: tuple[int, ...] | None = None
    deprels: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        n = len(self.words)
        if n == 0:
            raise ValueError("a sentence needs at least one word")
        for name in ("pos", "constituent", "punct"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries for {n} words")
        if len(self.span_labels) != len(self.spans):
            raise ValueError("span_labels must have one label per span")
        for i, j in self.spans:
            if not 0 <= i < j <= n or j - i < 2:
                raise ValueError(f"span {(i, j)} is not a span of 2+ words of {n}")
        if n >= 2 and (0, n) not in self.spans:
            raise ValueError(f"the whole-sentence span (0, {n}) is missing")
        span_forest(self.spans, n)  # raises on crossing spans
        if self.heads is not None:
            if len(self.heads) != n or self.deprels is None or len(self.deprels) != n:
                raise ValueError("heads and deprels need one entry per word")
            _check_heads(self.heads)

    def __len__(self) -> int:
        return len(self.words)

    @property
    def binary(self) -> tuple[Span, ...]:
        """The right-binarised constituency tree (spans)."""
        return binarize_spans(self.spans)

    @property
    def depth(self) -> tuple[int, ...]:
        """Constituency depth of each word: the number of spans (root included) containing it."""
        return tuple(int(x) for x in _spans_above(self.spans, len(self.words)))

    @property
    def dep_depth(self) -> tuple[int, ...] | None:
        """Depth of each word in the dependency tree (root 0), or None without heads."""
        if self.heads is None:
            return None
        depth, _, _ = depths_and_tour(self.heads)
        return tuple(int(x) - 1 for x in depth[: len(self.words)])

    def distances(self) -> np.ndarray:
        """``(n, n)`` int64 tree distances between words: path lengths in the dependency
        tree when heads are given, else between the word leaves of the right-binarised
        constituency tree (a word hangs below the smallest span containing it). Computed
        through lowest common ancestors by range-minimum queries
        (:func:`~hierlens.models.tree_distances.tree_distance_matrix`): a number of Python
        steps linear in the sentence's length."""
        n = len(self.words)
        if self.heads is not None:
            return tree_distance_matrix(self.heads, range(n))
        binary = self.binary
        parent, innermost = span_forest(binary, n)
        nodes = np.concatenate([parent, innermost])  # spans, then words below their span
        return tree_distance_matrix(nodes, np.arange(len(binary), len(binary) + n))

    def depths(self) -> np.ndarray:
        """``(n,)`` int64 depth of each word in the tree :meth:`distances` uses: the
        dependency depth (root word 0), else the number of binarised spans above the word."""
        if self.heads is not None:
            return np.asarray(self.dep_depth, dtype=np.int64)
        return _spans_above(self.binary, len(self.words))

    def without_punct(self) -> Sentence:
        """The sentence with punctuation words removed and every index re-numbered.

        Spans shrink to the remaining words (spans left with fewer than two words vanish);
        a dependent of a removed word is re-attached to that word's nearest kept ancestor.
        """
        keep = [i for i, p in enumerate(self.punct) if not p]
        if len(keep) == len(self.words):
            return self
        if not keep:
            raise ValueError(f"sentence {' '.join(self.words)!r} is only punctuation")
        new = {old: k for k, old in enumerate(keep)}
        cum = np.concatenate([[0], np.cumsum([not p for p in self.punct])])
        spans: dict[Span, str] = {}
        for (i, j), label in zip(self.spans, self.span_labels):
            s = (int(cum[i]), int(cum[j]))
            if s[1] - s[0] >= 2 and s not in spans:
                spans[s] = label
        if len(keep) >= 2 and (0, len(keep)) not in spans:
            spans[(0, len(keep))] = self.span_labels[0]
        order = _sorted(set(spans))
        heads = deprels = None
        if self.heads is not None:
            heads_l = []
            for old in keep:
                h = self.heads[old]
                while h != -1 and self.punct[h]:
                    h = self.heads[h]
                heads_l.append(new[h] if h != -1 else -1)
            if heads_l.count(-1) != 1:
                raise ValueError("removing punctuation would leave a forest (the root is punct)")
            heads, deprels = tuple(heads_l), tuple(self.deprels[i] for i in keep)
        return Sentence(
            words=tuple(self.words[i] for i in keep),
            pos=tuple(self.pos[i] for i in keep),
            spans=order,
            span_labels=tuple(spans[s] for s in order),
            constituent=tuple(self.constituent[i] for i in keep),
            punct=(False,) * len(keep),
            heads=heads,
            deprels=deprels,
        )
