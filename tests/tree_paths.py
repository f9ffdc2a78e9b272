"""Path lengths in small explicit graphs by breadth-first search from every node: the slow,
obvious reference the tree-distance and structural-probe tests compare against."""

from __future__ import annotations

import numpy as np


def adjacency(edges, n: int) -> dict[int, list[int]]:
    """Nodes ``0..n-1`` and their neighbours over the undirected ``edges``."""
    adj: dict[int, list[int]] = {v: [] for v in range(n)}
    for a, b in edges:
        adj[a].append(b)
        adj[b].append(a)
    return adj


def head_adjacency(heads) -> dict[int, list[int]]:
    """The dependency tree of ``heads`` (``-1`` at the root): each word joined to its head."""
    return adjacency([(i, h) for i, h in enumerate(heads) if h >= 0], len(heads))


def bfs_distances(adj, n: int) -> np.ndarray:
    """``(n, n)`` path lengths between nodes ``0..n-1`` of ``adj`` (node -> neighbours),
    ``-1`` where there is no path."""
    out = np.full((n, n), -1, dtype=np.int64)
    for s in range(n):
        seen, frontier, d = {s}, [s], 0
        while frontier:
            for u in frontier:
                out[s, u] = d
            frontier = [v for u in frontier for v in adj[u] if v not in seen]
            seen.update(frontier)
            d += 1
    return out
