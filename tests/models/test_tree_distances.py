"""Sentence tree distances against a brute-force reference (breadth-first search on the
explicit tree), and their cost: a number of Python calls linear in the sentence length."""

from __future__ import annotations

import random
import sys

import numpy as np
import pytest

from hierlens.models.sentence import Sentence, binarize_spans, dependency_spans
from hierlens.models.tree_distances import span_forest, tree_distance_matrix
from tests.tree_paths import adjacency, bfs_distances


def _random_heads(n: int, rng: random.Random) -> list[int]:
    order = list(range(n))
    rng.shuffle(order)
    heads = [-1] * n
    for k in range(1, n):
        heads[order[k]] = order[rng.randrange(k)]
    return heads


def _bfs_distances(edges: list[tuple[int, int]], nodes: list[int], size: int) -> np.ndarray:
    """Path lengths between ``nodes`` of the graph on ``0..size-1`` by breadth-first search
    from every node (the slow obvious way)."""
    return bfs_distances(adjacency(edges, size), size)[np.ix_(nodes, nodes)]


def _sentence(n: int, spans, heads=None) -> Sentence:
    return Sentence(
        words=tuple(f"w{i}" for i in range(n)),
        pos=("X",) * n,
        spans=spans,
        span_labels=("S",) * len(spans),
        constituent=("X",) * n,
        punct=(False,) * n,
        heads=None if heads is None else tuple(heads),
        deprels=None if heads is None else ("dep",) * n,
    )


@pytest.mark.parametrize("seed", range(20))
def test_distances_equal_breadth_first_search(seed):
    rng = random.Random(seed)
    n = rng.randint(2, 40)
    heads = _random_heads(n, rng)
    spans = dependency_spans(heads)
    # dependency tree: edges word -- head
    dep = _sentence(n, spans, heads)
    edges = [(i, h) for i, h in enumerate(heads) if h >= 0]
    assert np.array_equal(dep.distances(), _bfs_distances(edges, list(range(n)), n))
    # constituency: the binarised spans as nodes, each word below its smallest span, and a
    # root above the top spans (nodes: spans 0..S-1, words S..S+n-1, the root S+n)
    con = _sentence(n, spans)
    binary = list(con.binary)
    S = len(binary)

    def smallest(i: int, j: int, exclude: int | None = None) -> int:
        """The smallest span holding words i..j-1 (other than span ``exclude``), else the
        root."""
        inside = [k for k, (a, b) in enumerate(binary) if a <= i and j <= b and k != exclude]
        return min(inside, key=lambda k: binary[k][1] - binary[k][0], default=S + n)

    edges = [(k, smallest(a, b, exclude=k)) for k, (a, b) in enumerate(binary)]
    edges += [(S + w, smallest(w, w + 1)) for w in range(n)]
    expected = _bfs_distances(edges, [S + w for w in range(n)], S + n + 1)
    assert np.array_equal(con.distances(), expected)
    assert np.array_equal(con.depths(), [sum(a <= w < b for a, b in binary) for w in range(n)])


def test_small_cases_by_hand():
    heads = [2, 2, -1, 4, 2]  # words 0, 1 and 4 hang off word 2; word 3 off word 4
    assert dependency_spans(heads) == ((0, 5), (3, 5))
    assert binarize_spans(((0, 5), (1, 4))) == ((0, 5), (1, 5), (1, 4), (2, 4))
    parent, innermost = span_forest([(0, 5), (1, 4)], 5)
    assert parent.tolist() == [-1, 0] and innermost.tolist() == [0, 1, 1, 1, 0]
    with pytest.raises(ValueError, match="cross"):
        span_forest([(0, 3), (2, 5)], 5)
    with pytest.raises(ValueError, match="cycle"):
        dependency_spans([1, 0, -1])
    assert tree_distance_matrix([-1], [0]).tolist() == [[0]]


def _python_calls(fn) -> int:
    """Python-level and built-in calls made while ``fn`` runs."""
    count = [0]

    def profile(frame, event, arg):
        if event in ("call", "c_call"):
            count[0] += 1

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return count[0]


@pytest.mark.parametrize("kind", ["dependency", "constituency"])
def test_distances_take_a_linear_number_of_python_calls(kind):
    """Doubling the sentence twice multiplies the calls by about 4 (linear), not 16
    (quadratic, as the pairwise loop it replaces did)."""
    calls = {}
    for n in (100, 400):
        heads = [-1] + list(range(n - 1))  # a chain: the deepest tree
        s = _sentence(n, dependency_spans(heads), heads if kind == "dependency" else None)
        calls[n] = _python_calls(s.distances)
    assert calls[400] < 6 * calls[100], calls
