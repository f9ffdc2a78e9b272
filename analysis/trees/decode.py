"""Tree projections: the binary tree that best explains a sentence's span scores.

Follows [Murty2023a]. Scores come from
:func:`hierlens.analysis.trees.spans`: ``scores[i, j]`` (``i <= j``) is the
score of the span of words ``i..j`` inclusive, higher meaning "more like a constituent".

Trees use the convention of :attr:`hierlens.models.tasks.base.Example.tree`: a tuple of
half-open word spans ``(i, j)``, sorted by start and longest first, holding the whole sentence
``(0, n)`` and every internal node of the binary tree (the ``n - 1`` spans of at least two
words; single words are implicit). A one-word sentence is ``((0, 1),)``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

Span = tuple[int, int]
Tree = tuple[Span, ...]
_METHODS = ("greedy", "exact")


def as_score_matrix(scores: torch.Tensor | np.ndarray) -> np.ndarray:
    """A validated float64 ``(n, n)`` copy of ``scores`` (only ``i <= j`` entries are read)."""
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().to("cpu", torch.float64).numpy()
    arr = np.array(scores, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] == 0:
        raise ValueError(f"scores must be a non-empty square (n, n) matrix, got {arr.shape}")
    upper = arr[np.triu_indices(arr.shape[0])]
    if not np.all(np.isfinite(upper)):
        raise ValueError("scores must be finite on and above the diagonal (spans i <= j)")
    return arr


class ProjectedTree(tuple):
    """A tree as sorted half-open spans (a plain tuple of ``(i, j)`` pairs, equal to one),
    drawn as an SVG over its word indices in a notebook."""

    def _repr_html_(self) -> str:
        from .draw import bracketing, tree_svg

        n = max((j for _, j in self), default=0)
        words = [str(i) for i in range(n)]
        return (
            f"<div><code>{bracketing(self, words)}</code><br>"
            + tree_svg(self, words, f"tree over {n} words")
            + "</div>"
        )


def sort_tree(spans: set[Span] | list[Span]) -> Tree:
    """Spans sorted by start, longest first (the gold-tree order)."""
    return ProjectedTree(sorted(set(spans), key=lambda s: (s[0], -s[1])))


def _split_tree(n: int, split_at: Callable[[int, int], int]) -> Tree:
    """The binary tree over ``n`` words that splits each inclusive word span ``i..j`` into
    ``i..k`` and ``k+1..j`` at ``k = split_at(i, j)``, from the whole sentence down."""
    spans: set[Span] = {(0, n)}
    stack = [(0, n - 1)]  # inclusive word spans still to split
    while stack:
        i, j = stack.pop()
        if i == j:
            continue
        k = split_at(i, j)
        for a, b in ((i, k), (k + 1, j)):
            if b > a:
                spans.add((a, b + 1))
                stack.append((a, b))
    return sort_tree(spans)


def _greedy(s: np.ndarray) -> Tree:
    def split_at(i: int, j: int) -> int:
        ks = np.arange(i, j)
        gains = s[i, ks] + s[ks + 1, j]
        return int(ks[int(np.argmax(gains))])

    return _split_tree(s.shape[0], split_at)


def _exact(s: np.ndarray) -> Tree:
    n = s.shape[0]
    best = np.full((n, n), -np.inf)
    split = np.zeros((n, n), dtype=np.int64)
    best[np.arange(n), np.arange(n)] = s[np.arange(n), np.arange(n)]
    for length in range(2, n + 1):
        for i in range(0, n - length + 1):
            j = i + length - 1
            ks = np.arange(i, j)
            totals = best[i, ks] + best[ks + 1, j]
            arg = int(np.argmax(totals))
            split[i, j] = ks[arg]
            best[i, j] = s[i, j] + totals[arg]
    return _split_tree(n, lambda i, j: int(split[i, j]))


def tree_projection(scores: torch.Tensor | np.ndarray, method: str = "greedy") -> Tree:
    """The binary tree projected from one sentence's span scores.

    ``method="greedy"`` is the paper's top-down decoder: split the span ``i..j`` at
    ``k* = argmax_k s(i, k) + s(k + 1, j)`` and recurse into both halves. ``method="exact"``
    maximises the total score of all constituents of the tree (every node, single words and
    the whole sentence included, which every binary tree shares) by the O(n^3) dynamic
    programme ``best(i, j) = s(i, j) + max_k best(i, k) + best(k + 1, j)``. Ties go to the
    smallest ``k`` in both.

    Parameters:
        scores: ``(n, n)`` span scores, ``scores[i, j]`` for the words ``i..j`` inclusive.
        method: "greedy" or "exact".

    Returns:
        The tree as sorted half-open spans (see the module docstring).
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    s = as_score_matrix(scores)
    return _greedy(s) if method == "greedy" else _exact(s)


def tree_splits(tree: Tree | list[Span] | set[Span], n: int | None = None) -> dict[Span, int]:
    """The split point of every internal node of a binary tree.

    Returns ``{(i, j): k}``: node ``(i, j)`` (half-open, at least two words) has children
    ``(i, k)`` and ``(k, j)``. ``n`` defaults to the end of the widest span. Raises
    ``ValueError`` when the spans are not a full binary tree over ``0..n`` (what the
    decoders here return).
    """
    spans = {(int(a), int(b)) for a, b in tree}
    if not spans:
        raise ValueError("tree is empty")
    if n is None:
        n = max(b for _, b in spans)
    if (0, n) not in spans:
        raise ValueError(f"tree lacks the whole-sentence span (0, {n})")
    for a, b in spans:
        if not 0 <= a < b <= n:
            raise ValueError(f"span ({a}, {b}) is not a span of {n} words")
    internal = {s for s in spans if s[1] - s[0] >= 2}
    splits: dict[Span, int] = {}
    for i, j in internal:
        lefts = [b for a, b in internal if a == i and b < j]
        k = max(lefts) if lefts else i + 1
        if j - k >= 2 and (k, j) not in internal:
            raise ValueError(f"tree is not binary: node ({i}, {j}) has no split")
        splits[(i, j)] = k
    if len(internal) != n - 1 or len(splits) != n - 1:
        raise ValueError(f"a binary tree over {n} words has {n - 1} internal nodes")
    # Every child must be a node: count each internal node as a child exactly once.
    children = []
    for (i, j), k in splits.items():
        children += [c for c in ((i, k), (k, j)) if c[1] - c[0] >= 2]
    if sorted(children) != sorted(internal - {(0, n)}):
        raise ValueError("tree is not binary: its spans do not nest as one binary tree")
    return splits


def constituent_score(scores: torch.Tensor | np.ndarray, tree: Tree) -> float:
    """Total score of a binary tree's constituents: every node, single words included
    (the objective that ``method="exact"`` maximises)."""
    s = as_score_matrix(scores)
    n = s.shape[0]
    tree_splits(tree, n)
    total = float(np.trace(s)) if n > 1 else 0.0
    return total + sum(float(s[i, j - 1]) for i, j in set(tree))
