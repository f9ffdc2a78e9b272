"""Tree computations of a sentence in a number of Python steps linear in its length.

A sentence's trees are given as parent arrays (dependency heads) or as laminar spans
(constituency). :func:`tree_distance_matrix` gives all pairwise path lengths between chosen
nodes through their lowest common ancestors, found as range minima of depths on an Euler
tour (the reduction of Bender & Farach-Colton, "The LCA problem revisited", 2000): one
Python loop over the tour and one NumPy running minimum per row. :func:`span_forest` turns
spans into a parent array in one sweep.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["depths_and_tour", "span_forest", "subtree_ranges", "tree_distance_matrix"]


def _with_root(parent: Sequence[int]) -> tuple[np.ndarray, np.ndarray, int]:
    """Children of every node of the forest ``parent`` (``-1``: a root), under a virtual
    root ``N`` that adopts the roots: ``(order, starts, N)`` with the children of node ``v``
    at ``order[starts[v]:starts[v + 1]]`` in index order."""
    p = np.asarray(parent, dtype=np.int64).reshape(-1)
    n = len(p)
    if n and (p.min() < -1 or p.max() >= n):
        raise ValueError(f"parents must be node indices or -1, got {p.min()}..{p.max()}")
    p = np.where(p < 0, n, p)
    order = np.argsort(p, kind="stable")
    starts = np.concatenate([[0], np.cumsum(np.bincount(p, minlength=n + 1))])
    return order, starts, n


def depths_and_tour(parent: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(depth, tour, first)`` of the forest ``parent`` below a virtual root (depth 0, so a
    root has depth 1): ``tour`` is the Euler tour of node ids (the virtual root is ``N``),
    ``first[v]`` the position of ``v``'s first visit. A cycle is a ``ValueError``."""
    order, starts, root = _with_root(parent)
    n = root
    depth = np.zeros(n + 1, dtype=np.int64)
    first = np.full(n + 1, -1, dtype=np.int64)
    tour: list[int] = []
    stack = [(root, starts[root])]
    first[root] = 0
    while stack:
        v, k = stack[-1]
        tour.append(v)
        if k < starts[v + 1]:
            child = int(order[k])
            stack[-1] = (v, k + 1)
            depth[child] = depth[v] + 1
            first[child] = len(tour)
            stack.append((child, starts[child]))
        else:
            stack.pop()
    if (first[:n] < 0).any():
        raise ValueError("the parents contain a cycle")
    return depth, np.asarray(tour, dtype=np.int64), first


def tree_distance_matrix(parent: Sequence[int], nodes: Sequence[int]) -> np.ndarray:
    """``(n, n)`` int64 path lengths in the forest ``parent`` between the nodes ``nodes``
    (roots joined by a virtual root).

    With the nodes sorted by their first visit in a depth-first tour, the depth of the
    lowest common ancestor of the ``a``-th and ``b``-th (``a < b``) is the smallest depth of
    the LCAs of consecutive nodes between them, and the LCA of two consecutive nodes is the
    shallowest tour entry between their first visits. So one pass over the tour, one
    ``minimum.reduceat`` and one running minimum per row give every distance: ``O(N + n)``
    Python steps for ``n * n`` results.
    """
    depth, tour, first = depths_and_tour(parent)
    nodes = np.asarray(nodes, dtype=np.int64).reshape(-1)
    n = len(nodes)
    out = np.zeros((n, n), dtype=np.int64)
    if n < 2:
        return out
    d = depth[tour]
    f = first[nodes]
    order = np.argsort(f, kind="stable")
    fs = f[order]
    # LCA depth of each pair of consecutive nodes: the shallowest tour entry between them
    between = np.minimum(np.minimum.reduceat(d, fs)[:-1], d[fs[1:]])
    dn = depth[nodes[order]]
    for a in range(n - 1):
        lca = np.minimum.accumulate(between[a:])
        out[a, a + 1 :] = dn[a] + dn[a + 1 :] - 2 * lca
    out += out.T
    inverse = np.argsort(order)
    return out[np.ix_(inverse, inverse)]


def subtree_ranges(parent: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(lo, hi, size)`` of every node's subtree in the forest ``parent``: its smallest
    and largest node index and its number of nodes (a node with ``hi - lo + 1 == size``
    has a contiguous yield)."""
    depth, tour, first = depths_and_tour(parent)
    n = len(depth) - 1
    lo, hi = np.arange(n + 1), np.arange(n + 1)
    size = np.ones(n + 1, dtype=np.int64)
    p = np.asarray(parent, dtype=np.int64).reshape(-1)
    p = np.where(p < 0, n, p)
    for v in np.argsort(-depth[:n], kind="stable"):  # deepest first: children before parents
        u = p[v]
        lo[u], hi[u], size[u] = min(lo[u], lo[v]), max(hi[u], hi[v]), size[u] + size[v]
    return lo[:n], hi[:n], size[:n]


def span_forest(spans: Sequence[tuple[int, int]], n: int) -> tuple[np.ndarray, np.ndarray]:
    """The laminar ``spans`` over ``n`` words as a forest: ``(parent of each span (-1 at
    top), innermost span of each word (-1 if none))``, in one sweep. Crossing spans are a
    ``ValueError`` naming them."""
    order = sorted(range(len(spans)), key=lambda s: (spans[s][0], -spans[s][1]))
    parent = np.full(len(spans), -1, dtype=np.int64)
    innermost = np.full(n, -1, dtype=np.int64)
    stack: list[int] = []
    k = 0
    for w in range(n + 1):
        while stack and spans[stack[-1]][1] <= w:
            stack.pop()
        while k < len(order) and spans[order[k]][0] == w:
            s = order[k]
            if stack and spans[stack[-1]][1] < spans[s][1]:
                raise ValueError(f"spans {spans[stack[-1]]} and {spans[s]} cross")
            parent[s] = stack[-1] if stack else -1
            stack.append(s)
            k += 1
        if w < n:
            innermost[w] = stack[-1] if stack else -1
    return parent, innermost
